"""The built-in demo data: electroluminescence photos of solar cells from the PyPI package `elpv-dataset`.

2,624 grey 300x300 images of solar cells, each with a defect probability in {0, 1/3, 2/3, 1} given by
experts and a cell type (mono, poly). One label CSV per task, all with the same seeded split:

| task       | target                                                  |
|------------|---------------------------------------------------------|
| binary     | defective (probability >= 0.5) or functional            |
| multiclass | the probability level: p0.00, p0.33, p0.67, p1.00       |
| multilabel | the cell type, plus `defective` when probability >= 0.5 |
| regression | the probability                                         |

Data licence: CC BY-NC-SA 4.0 (Buerhop-Lutz, Deitsch et al., see the package).
"""

from __future__ import annotations

from pathlib import Path

from vistrain.core.files import write_csv
from vistrain.data.samples import TASKS, Sample
from vistrain.data.splits import stratified_split

TARGET_COLUMNS = {"binary": "label", "multiclass": "label", "multilabel": "labels", "regression": "defect_probability"}


def elpv_root() -> Path:
    """The folder of the images the package ships: the image root of the demo's CSVs."""
    import elpv_dataset

    return Path(elpv_dataset.__file__).parent / "data"


def elpv_labels() -> list[tuple[Path, float, str]]:
    """(image path, defect probability, cell type) for every image the package ships."""
    data = elpv_root()
    with open(data / "labels.csv") as file:
        rows = [line.split() for line in file if line.strip()]
    return [(data / name, float(probability), kind) for name, probability, kind in rows]


def elpv_target(task: str, probability: float, cell_type: str) -> str:
    """The CSV cell for one image and task (see the table above)."""
    defective = probability >= 0.5
    return {"binary": "defective" if defective else "functional",
            "multiclass": f"p{probability:.2f}",
            "multilabel": f"defective;{cell_type}" if defective else cell_type,
            "regression": f"{probability:.6f}"}[task]


def elpv_csv(destination: Path, task: str = "binary", val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write `destination/elpv-<task>.csv` (paths relative to its image root, `elpv_root()`; a split column
    stratified by probability and cell type, the same for every task) and return its path."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    labels = elpv_labels()
    strata = [Sample(path, f"{probability}/{cell_type}") for path, probability, cell_type in labels]
    train, _ = stratified_split(strata, val_fraction, seed)
    in_train = {s.path for s in train}
    destination.mkdir(parents=True, exist_ok=True)
    path, root = destination / f"elpv-{task}.csv", elpv_root()
    write_csv(path, ["path", TARGET_COLUMNS[task], "split"],
              [[image.relative_to(root).as_posix(), elpv_target(task, probability, cell_type),
                "train" if image in in_train else "val"]
               for image, probability, cell_type in labels])
    return path
