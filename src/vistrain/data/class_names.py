"""Human names for classes known by ids, such as ImageNet's WordNet synsets (`n02123045`: tabby cats).

A mapping file has a class a line: its id, a space or a tab, then its names separated by commas:

    n02123045 tabby, tabby cat           LOC_synset_mapping.txt (Kaggle's ImageNet Object Localization Challenge)
    n02123045<TAB>tabby, tabby cat       words.txt (ImageNet's list of WordNet ids, as Tiny ImageNet ships it)

The ids stay the classes (folder names, `classes` in config.json); a class is shown by its first name. A class
the file does not name is shown by its id, and two classes with the same first name (ImageNet has two `crane`s, a
bird and a machine) are shown with their ids after it. A name or id is at most MAX_NAME characters (`vistrain.data.names`),
without control characters, and an id is named once: a file that breaks one of these is refused with its line.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from vistrain.core.console import printable
from vistrain.core.files import RefusedFile, open_data_file
from vistrain.data.names import label_problem
from vistrain.data.samples import DataError

MAX_MAPPING_BYTES = 16 * 2**20  # ImageNet's words.txt, every WordNet id with its names, is 2.6 MB


def read_class_names(path: Path) -> dict[str, str]:
    """{id: first name} for every line of a mapping file; a DataError naming the file and the line for a line that
    is not an id and names, an id or name that cannot name a class (`label_problem`), an id named twice, or a file
    over MAX_MAPPING_BYTES."""
    try:
        with open_data_file(path, MAX_MAPPING_BYTES) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig") as text:
            lines = [(number, line.strip()) for number, line in enumerate(text, 1) if line.strip()]
    except (RefusedFile, UnicodeDecodeError) as error:
        raise DataError(f"{path}: {error}") from None
    names: dict[str, str] = {}
    lines_of: dict[str, int] = {}
    for number, line in lines:
        parts = line.split(None, 1)
        name = parts[1].split(",")[0].strip() if len(parts) == 2 else ""
        where = f"{path} line {number}"
        if not name:
            raise DataError(f"{where}: '{printable(line[:60])}' is not an id followed by names, as in "
                            "'n02123045 tabby, tabby cat'")
        problem = label_problem(parts[0]) or label_problem(name)
        if problem:
            raise DataError(f"{where}: {problem}")
        if parts[0] in names:
            raise DataError(f"{where}: {parts[0]} is named again (first on line {lines_of[parts[0]]})")
        names[parts[0]], lines_of[parts[0]] = name, number
    if not names:
        raise DataError(f"{path} names no classes")
    return names


def name_classes(classes: list[str], path: Path) -> dict[str, str]:
    """{id: name} for the classes the mapping file names (the others are shown by their ids)."""
    names = read_class_names(path)
    return {c: names[c] for c in classes if c in names}


def class_labels(classes: list[str], names: dict[str, str]) -> list[str]:
    """How each class is shown: its name; with its id after it when another class is shown the same; or its id
    when it has no name."""
    shown = [names.get(c, c) for c in classes]
    counts = Counter(shown)
    return [f"{label} ({c})" if counts[label] > 1 and c in names else label for c, label in zip(classes, shown)]
