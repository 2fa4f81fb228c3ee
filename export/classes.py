"""Class names for the bundle, in index order; never guessed silently.

The reference numbered its classes by first appearance while scanning its data and never saved
the map (docs/reference.md §1), so a name list is something the user asserts: a file
(`--classes`), SoccerNet-v2's official order (`--soccernet-classes`), or neutral `class_<i>`.
Random weights have no order to get wrong: an 18-class random-init bundle is named with SoccerNet's
list, so that its heads go through tsf-spot and tsf-plot as they are (the bundle says it is random).
"""

from __future__ import annotations

from tsf.runtime.errors import InputError
from tsf.runtime.spotting.classes import SOCCERNET_V2_CLASS_NAMES


def default_class_names(count: int, random_init: bool) -> list[str]:
    """The names when none are given: SoccerNet-v2's for 18 random classes, else `class_<i>`."""
    if random_init and count == len(SOCCERNET_V2_CLASS_NAMES):
        return list(SOCCERNET_V2_CLASS_NAMES)
    return [f"class_{i}" for i in range(count)]


def check_class_names(names, count: int, source: str) -> list[str]:
    names = [str(n) for n in names]
    if len(names) != count:
        raise InputError(f"{len(names)} class names from {source}, but the model has {count} classes")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source} repeats class names: {', '.join(duplicates)}")
    return names
