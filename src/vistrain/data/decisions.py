"""Review decisions: keep, exclude or relabel an image, saved in a CSV file that every command honours.

The file (`vistrain-decisions.csv` in the data folder, or in the label CSV's folder, or `--decisions FILE`) has
rows `file,decision,label`: the image's path relative to the file's folder, `keep`, `exclude` or `relabel`, and
for relabel the new label (a class; `a;b` for multi-label; a number for regression). Original images are never
moved, renamed or deleted: decisions only change what vistrain reads. Each decision is written at once,
atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vistrain.core.files import read_csv, write_csv
from vistrain.data.files import DECISIONS_FILE
from vistrain.data.samples import DataError, Skipped

ACTIONS = ("keep", "exclude", "relabel")
EXCLUDED = "excluded in review"


@dataclass(frozen=True)
class Decision:
    action: str  # one of ACTIONS
    label: str = ""  # the new label, for relabel


class Decisions:
    """The decisions of one file, by image path (relative to the file's folder)."""

    def __init__(self, path: Path, entries: dict[str, Decision] | None = None):
        self.path = Path(path)
        self.root = self.path.parent.resolve()
        self.entries = entries or {}

    @classmethod
    def load(cls, path: Path) -> "Decisions":
        """The decisions in `path` ({} when it does not exist yet); rows that make no sense stop with their line."""
        decisions = cls(path)
        for line, row in enumerate(read_csv(decisions.path), 2):  # [] when there is no file yet
            action, label = (row.get("decision") or "").strip(), (row.get("label") or "").strip()
            if not row.get("file") or action not in ACTIONS or (action == "relabel") != bool(label):
                raise DataError(f"{decisions.path} line {line}: expected file,decision,label with a decision of "
                                f"{', '.join(ACTIONS)} (and a label for relabel only)")
            decisions.entries[row["file"]] = Decision(action, label)
        return decisions

    @classmethod
    def beside(cls, source: Path) -> "Decisions | None":
        """The decisions file of a data folder or label CSV, if there is one."""
        path = default_path(source)
        return cls.load(path) if path.is_file() else None

    def key(self, image: Path) -> str:
        """How `image` is named in the file: relative to its folder when inside it, else absolute."""
        resolved = Path(image).resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(resolved)

    def get(self, image: Path) -> Decision | None:
        return self.entries.get(self.key(image))

    def decide(self, image: Path, action: str, label: str = "") -> None:
        """Record a decision for `image` and save the file at once."""
        if action not in ACTIONS or (action == "relabel") != bool(label):
            raise DataError(f"a decision is one of {', '.join(ACTIONS)}, with a label for relabel only")
        self.entries[self.key(image)] = Decision(action, label)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(self.path, ["file", "decision", "label"],
                  [[name, d.action, d.label] for name, d in sorted(self.entries.items())])

    def __len__(self) -> int:
        return len(self.entries)


def default_path(source: Path) -> Path:
    """Where the decisions of a data folder (inside it) or a label CSV (in its folder) live."""
    source = Path(source)
    return (source if source.is_dir() else source.parent) / DECISIONS_FILE


def apply_to_files(files: dict[str, list[Path]],
                   decisions: Decisions | None) -> tuple[dict[str, list[Path]], list[Skipped]]:
    """{class: files} with the excluded images left out (returned as skipped) and the relabelled ones moved to
    their new class: what `split` and `check` read."""
    if not decisions:
        return files, []
    result: dict[str, list[Path]] = {label: [] for label in files}
    excluded = []
    for label, paths in files.items():
        for path in paths:
            decision = decisions.get(path)
            if decision is not None and decision.action == "exclude":
                excluded.append(Skipped(path, EXCLUDED))
            else:
                result.setdefault(decision.label if decision and decision.action == "relabel" else label,
                                  []).append(path)
    return {label: sorted(paths) for label, paths in sorted(result.items()) if paths}, excluded
