"""SoccerNet-v2's action classes (the one list export, training and spotting all use), and class-name files.

The 17 actions are in the order of SoccerNet's official event dictionary (`EVENT_DICTIONARY_V2`);
the reference appended a background class as index 17 (docs/reference.md §1). The reference never
saved which index meant which action in its own weights, so this order is what tsf asserts when a
user says `--soccernet-classes`, never a guess about someone else's weights.
"""

import json
import os

from ..errors import InputError

SOCCERNET_V2_ACTIONS = (
    "Penalty", "Kick-off", "Goal", "Substitution", "Offside", "Shots on target",
    "Shots off target", "Clearance", "Ball out of play", "Throw-in", "Foul",
    "Indirect free-kick", "Direct free-kick", "Corner", "Yellow card", "Red card",
    "Yellow->red card",
)
BACKGROUND = "background"
SOCCERNET_V2_CLASS_NAMES = SOCCERNET_V2_ACTIONS + (BACKGROUND,)


def read_class_names(path) -> list[str]:
    """Class names in index order from a file: one per line (blanks around a name trimmed, trailing
    blank lines ignored) or a JSON list (as copied from bundle.json). The one reader of such files:
    tsf-export --classes, tsf-spot --classes and the learned heads' classes all go through it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise InputError(f"class names file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read class names from {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path} is not a JSON list of class names ({exc})") from None
        if not isinstance(names, list):
            raise InputError(f"{path} is not a JSON list of class names")
        names = [str(n).strip() for n in names]
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise InputError(f"{path} holds no class names")
    if "" in names:
        raise InputError(f"{path} has an empty class name (entry {names.index('') + 1})")
    return names
