"""Review decisions: keep, exclude or relabel an image, saved in a CSV file that every command honours.

The file (`vistrain-decisions.csv` in the data folder, or in the label CSV's folder, or `--decisions FILE`
anywhere) has the header `file,decision,label` and a row per image: its path relative to the data folder (the
folder of class folders, or the label CSV's folder; absolute when outside it), `keep`, `exclude` or `relabel`, and
for relabel the new label (a class; `a;b` for multi-label; numbers for regression). Original images are never
moved, renamed or deleted: decisions only change what vistrain reads. Each decision is written at once,
atomically.

Every reader refuses a malformed file in one line naming the file and the line: no header, an unknown decision, a
label that cannot name a class (`vistrain.data.names`), a second decision for one image, a file that is not UTF-8
or has a cell over the csv module's limit. A cell that starts like a spreadsheet formula (`=`, `+`, `-`, `@`) or
with `'` is written with a `'` before it, which reading takes off again: opened in a spreadsheet, the file runs
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vistrain.core.files import write_csv
from vistrain.data.labels_csv import read_csv_lines
from vistrain.data.listing import DECISIONS_FILE
from vistrain.data.names import FORMULA_START, LABEL_SEPARATOR, label_problem, new_class_problem
from vistrain.data.samples import DataError, Skipped

ACTIONS = ("keep", "exclude", "relabel")
HEADER = ["file", "decision", "label"]
EXCLUDED = "excluded in review"
QUOTE = "'"  # put before a cell that a spreadsheet would read as a formula


@dataclass(frozen=True)
class Decision:
    action: str  # one of ACTIONS
    label: str = ""  # the new label, for relabel
    line: int = field(default=0, compare=False)  # its line in the file (0: not read from it)


class Decisions:
    """The decisions of one file, by image path (relative to the data folder `root`)."""

    def __init__(self, path: Path, root: Path | None = None, entries: dict[str, Decision] | None = None):
        self.path = Path(path)
        self.root = Path(root or self.path.parent).resolve()
        self.entries = entries or {}

    @classmethod
    def resolve(cls, given: Path | None, source: Path) -> "Decisions":
        """The decisions of data `source` (a folder, a label CSV or an SVHN .mat): those in `given`, else in the file
        beside the data (`default_path`); none when that file does not exist (yet)."""
        return cls.load(Path(given) if given else default_path(source), data_root(source))

    @classmethod
    def load(cls, path: Path, root: Path | None = None) -> "Decisions":
        """The decisions in `path` ({} when it does not exist yet), paths relative to `root` (default: the file's
        folder); a DataError naming the file and the line for anything malformed (see the module's docstring)."""
        decisions = cls(path, root)
        if not decisions.path.is_file():
            return decisions
        lines = read_csv_lines(decisions.path)
        if not lines or [cell.strip() for cell in lines[0][1]] != HEADER:
            raise DataError(f"{decisions.path} line {lines[0][0] if lines else 1}: expected the header "
                            f"{','.join(HEADER)} (a decisions file is written by `vistrain review`)")
        for line, row in lines[1:]:
            decision = _decision(row, line, decisions.path)
            name = _unquoted(row[0])
            if name in decisions.entries:
                raise DataError(f"{decisions.path} line {line}: a second decision for {name} (first on line "
                                f"{decisions.entries[name].line})")
            decisions.entries[name] = decision
        return decisions

    def key(self, image: Path) -> str:
        """How `image` is named in the file: relative to the data folder when inside it, else absolute."""
        resolved = Path(image).resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(resolved)

    def get(self, image: Path) -> Decision | None:
        return self.entries.get(self.key(image))

    def decide(self, image: Path, action: str, label: str = "") -> None:
        """Record a decision for `image` and save the file at once."""
        if action not in ACTIONS or (action == "relabel") != bool(label):
            raise DataError(f"a decision is one of {', '.join(ACTIONS)}, with a label for relabel only")
        problem = _label_problem(label)
        if problem:
            raise DataError(f"the label cannot name a class: {problem}")
        self.entries[self.key(image)] = Decision(action, label)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(self.path, HEADER, [[_quoted(name), d.action, _quoted(d.label)]
                                      for name, d in sorted(self.entries.items())])

    def where(self, decision: Decision) -> str:
        """The file and line of a decision, for messages."""
        return f"{self.path} line {decision.line}"

    def __len__(self) -> int:
        return len(self.entries)


def _decision(row: list[str], line: int, path: Path) -> Decision:
    """A row of a decisions file, checked; a DataError naming the file and the line."""
    cells = [_unquoted(cell) for cell in row] + [""] * (3 - len(row))
    action, label = cells[1].strip(), cells[2].strip()
    if len(row) > 3 or not cells[0] or action not in ACTIONS or (action == "relabel") != bool(label):
        raise DataError(f"{path} line {line}: expected file,decision,label with a decision of {', '.join(ACTIONS)} "
                        "(and a label for relabel only)")
    problem = _label_problem(label)
    if problem:
        raise DataError(f"{path} line {line}: the label cannot name a class: {problem}")
    return Decision(action, label, line)


def _label_problem(label: str) -> str | None:
    """Why one of the labels of a relabel cannot name a class (`label_problem`), or None."""
    return next(filter(None, (label_problem(part.strip()) for part in label.split(LABEL_SEPARATOR) if label)), None)


def _quoted(cell: str) -> str:
    return QUOTE + cell if cell.startswith((*FORMULA_START, QUOTE)) else cell


def _unquoted(cell: str) -> str:
    return cell[1:] if cell.startswith(QUOTE) else cell


def data_root(source: Path) -> Path:
    """The folder a decisions file's relative paths start from: the data folder, or the label CSV's (or .mat's)
    folder."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def default_path(source: Path) -> Path:
    """Where the decisions of a data folder (inside it) or a label CSV (in its folder) live."""
    return data_root(source) / DECISIONS_FILE


def apply_to_files(files: dict[str, list[Path]],
                   decisions: Decisions) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """{class: files} with the excluded images left out (returned as skipped) and the relabelled ones moved to
    their new class: what `split` and `check` read. A relabel to a class the data does not have makes that class,
    if its name makes a folder (`new_class_problem`); else a DataError naming the file and the line."""
    if not decisions:
        return files, []
    result: dict[str, list[Path]] = {label: [] for label in files}
    excluded = []
    for label, paths in files.items():
        for path in paths:
            decision = decisions.get(path)
            if decision is not None and decision.action == "exclude":
                excluded.append(Skipped(path, EXCLUDED))
                continue
            new_label = label
            if decision is not None and decision.action == "relabel":
                problem = None if decision.label in files else new_class_problem(decision.label)
                if problem:
                    raise DataError(f"{decisions.where(decision)}: a new class {problem}")
                new_label = decision.label
            result.setdefault(new_label, []).append(path)
    return {label: sorted(paths) for label, paths in sorted(result.items()) if paths}, excluded
