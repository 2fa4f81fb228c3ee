"""The `tsf-train fit` configuration: the shipped defaults, a user's YAML on top, `--set` overrides.

Unknown keys are errors (a typo must not silently train with a default). Values keep the type
of the default they replace where that is checkable.

Dependencies: PyYAML (the config format), importlib.resources (finds the packaged defaults).
"""

from __future__ import annotations

import copy
from importlib import resources

from tsf.runtime.extras import install_hint

from .errors import TrainingError

DEFAULT_CONFIG_NAME = "default_config.yaml"


def _yaml():
    try:
        import yaml
    except ImportError:
        raise TrainingError(f"PyYAML is needed for training configs: {install_hint('train')}") from None
    return yaml


def default_config_text() -> str:
    return resources.files(__package__).joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")


def default_config() -> dict:
    return _yaml().safe_load(default_config_text())


def _merge(base: dict, update: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{where}{key}"
        if key not in base:
            raise TrainingError(f"unknown config key {path!r} (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise TrainingError(f"config key {path!r} must be a mapping")
            out[key] = _merge(base[key], value, path + ".")
        else:
            out[key] = _checked(path, base[key], value)
    return out


def _checked(path: str, default, value):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool) or (path in ("amp",) and value == "auto")
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, str) or path == "amp" and isinstance(value, bool)
    if not ok:
        raise TrainingError(f"config key {path!r}: {value!r} should be like {default!r}")
    return value


def parse_override(text: str) -> dict:
    """`a.b=value` -> {"a": {"b": value}} with the value read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise TrainingError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    value = _yaml().safe_load(raw) if raw.strip() else None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | None = None, overrides: list[str] | tuple = ()) -> dict:
    config = default_config()
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                user = _yaml().safe_load(f) or {}
        except OSError as exc:
            raise TrainingError(f"cannot read config {path}: {exc.strerror}") from None
        except _yaml().YAMLError as exc:
            raise TrainingError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(user, dict):
            raise TrainingError(f"{path} must be a YAML mapping")
        config = _merge(config, user)
    for text in overrides:
        config = _merge(config, parse_override(text))
    validate(config)
    return config


def validate(config: dict):
    if not config["data"]["dir"]:
        raise TrainingError("set data.dir (the output folder of `tsf-train prepare`)")
    low, high = config["sampling"]["short_side_range"]
    size = config["model"]["image_size"]
    if not size <= low <= high:
        raise TrainingError(f"sampling.short_side_range {[low, high]} must satisfy image_size {size} <= low <= high")
    if config["amp"] not in ("auto", True, False):
        raise TrainingError(f"amp must be auto, true or false, not {config['amp']!r}")
    if config["device"] not in ("auto", "cpu", "gpu"):
        raise TrainingError(f"device must be auto, cpu or gpu, not {config['device']!r}")
    for key in ("epochs", "batch_size", "valid_batch_size"):
        if int(config["schedule"][key]) < 1:
            raise TrainingError(f"schedule.{key} must be at least 1")


def dump_config(config: dict) -> str:
    return _yaml().safe_dump(config, sort_keys=False)
