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


AMP_CHOICES = (False, "fp16", "bf16", "auto", True)  # True: fp16 (older configs); auto: fp16 on a GPU


def _checked(path: str, default, value):
    if default is None or value is None:
        return value
    if path == "amp":
        ok = value in AMP_CHOICES and not (isinstance(value, int) and not isinstance(value, bool))
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise TrainingError(f"config key {path!r}: {value!r} should be like {default!r}")
    return value


def flatten(config: dict, where: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the keys `--set` takes."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{where}{key}."))
        else:
            out[f"{where}{key}"] = value
    return out


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def parse_override(text: str) -> dict:
    """`a.b=value` -> {"a": {"b": value}} with the value read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise TrainingError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    return unflatten({key.strip(): _yaml().safe_load(raw) if raw.strip() else None})


def read_config_file(path: str) -> dict:
    """A user's YAML config as written (not merged with the defaults)."""
    try:
        with open(path, encoding="utf-8") as f:
            user = _yaml().safe_load(f) or {}
    except OSError as exc:
        raise TrainingError(f"cannot read config {path}: {exc.strerror}") from None
    except _yaml().YAMLError as exc:
        raise TrainingError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(user, dict):
        raise TrainingError(f"{path} must be a YAML mapping")
    return user


def requested_settings(path: str | None = None, overrides: list[str] | tuple = ()) -> dict:
    """What the user wrote, in a config file and in `--set`s (later wins), as flat keys; each key and
    value checked against the defaults."""
    requested: dict = {}
    defaults = default_config()
    for update in ([read_config_file(path)] if path is not None else []) + [parse_override(t) for t in overrides]:
        _merge(defaults, update)  # only checks: unknown keys and wrong types are errors
        requested.update(flatten(update))
    return requested


def load_config(path: str | None = None, overrides: list[str] | tuple = ()) -> dict:
    config = merged(default_config(), requested_settings(path, overrides))
    validate(config)
    return config


def merged(config: dict, flat_settings: dict) -> dict:
    return _merge(config, unflatten(flat_settings))


def validate(config: dict):
    if not config["data"]["dir"]:
        raise TrainingError("set data.dir (the output folder of `tsf-train prepare`)")
    low, high = config["sampling"]["short_side_range"]
    size = config["model"]["image_size"]
    if not size <= low <= high:
        raise TrainingError(f"sampling.short_side_range {[low, high]} must satisfy image_size {size} <= low <= high")
    if config["device"] not in ("auto", "cpu", "gpu"):
        raise TrainingError(f"device must be auto, cpu or gpu, not {config['device']!r}")
    for key in ("epochs", "batch_size", "valid_batch_size", "accumulate_steps"):
        if int(config["schedule"][key]) < 1:
            raise TrainingError(f"schedule.{key} must be at least 1")
    epochs, warmup = config["schedule"]["epochs"], config["optimizer"]["warmup_epochs"]
    if warmup >= epochs:
        # The warm-up climbs to the cosine's value at its own end, which is 0 at (or past) the last
        # epoch: every step would run at learning rate 0 and train nothing.
        raise TrainingError(f"optimizer.warmup_epochs {warmup} is not below schedule.epochs {epochs}: the warm-up "
                            f"would end where the cosine reaches 0 and every step would run at learning rate 0; "
                            f"use fewer warm-up epochs (the reference: 2 of 60)")


def sampling_warnings(config: dict) -> list[str]:
    """Settings that are valid but train differently from what their validation shows."""
    low, high = config["sampling"]["short_side_range"]
    size = config["model"]["image_size"]
    # The reference crops 224 from a short side of 225-256: at least 7/8 of it. A smaller share
    # means training sees zoomed-in details while validation (short side = image_size) sees it all.
    if size * 8 < high * 7:
        return [f"sampling.short_side_range [{low}, {high}] with model.image_size {size}: training crops {size} px "
                f"from a {low}-{high} px short side ({100 * size // high}-{100 * size // low} % of it) while "
                f"validation shows the whole short side at {size} px; the reference's ratio is "
                f"[{size + 1}, {size * 8 // 7}] for this size"]
    return []


def dump_config(config: dict) -> str:
    return _yaml().safe_dump(config, sort_keys=False)
