"""What may name a class, wherever the name is read: a class-name mapping, a label CSV, a review decision.

A name is at most MAX_NAME characters, without control characters (`label_problem`): a 10 MB line would otherwise
reach the report's figures (matplotlib asked for a 103,906,570 x 73,473,090-pixel image). A class that a review
adds on purpose becomes a folder when the data is split, so its name must also make a safe folder name
(`new_class_problem`).
"""

from __future__ import annotations

from vistrain.core.console import CONTROL, printable

MAX_NAME = 200  # characters of a class name, label or id
LABEL_SEPARATOR = ";"  # between the labels of a multi-label image ("cat;dog")
FORMULA_START = ("=", "+", "-", "@")  # a cell starting so is a formula to a spreadsheet


def label_problem(name: str) -> str | None:
    """Why `name` cannot name a class (empty, over MAX_NAME characters, a control character), or None."""
    if not name:
        return "an empty name"
    if len(name) > MAX_NAME:
        return f"a name of {len(name):,} characters (at most {MAX_NAME})"
    if CONTROL.search(name):
        return f"'{printable(name[:60], keep='')}' holds a control character"
    return None


def new_class_problem(name: str) -> str | None:
    """Why `name` cannot be a new class (see `label_problem`; and it must make a folder name: no slash, backslash
    or label separator, no leading dot or surrounding spaces, not like a spreadsheet formula), or None."""
    problem = label_problem(name)
    if problem:
        return problem
    if name != name.strip() or name.startswith(".") or any(c in name for c in ("/", "\\", LABEL_SEPARATOR)):
        return f"{name!r} cannot name a folder (no /, \\ or {LABEL_SEPARATOR}, no leading dot or surrounding spaces)"
    if name.startswith(FORMULA_START):
        return f"{name!r} starts like a spreadsheet formula ({' '.join(FORMULA_START)})"
    return None
