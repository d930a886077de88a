"""The built-in demo data: electroluminescence photos of solar cells from the PyPI package `elpv-dataset`.

2,624 grey 300x300 images of solar cells, each with a defect probability in {0, 1/3, 2/3, 1} given by
experts; the demo labels a cell `defective` when that probability is at least 0.5, else `functional`.
Data licence: CC BY-NC-SA 4.0 (Buerhop-Lutz, Deitsch et al., see the package).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def elpv_labels() -> list[tuple[Path, float, str]]:
    """(image path, defect probability, cell type) for every image the package ships."""
    import elpv_dataset

    data = Path(elpv_dataset.__file__).parent / "data"
    with open(data / "labels.csv") as file:
        rows = [line.split() for line in file if line.strip()]
    return [(data / name, float(probability), kind) for name, probability, kind in rows]


def prepare_elpv(destination: Path) -> Path:
    """Lay the elpv images out as `destination/{defective,functional}/`, linking rather than copying."""
    complete = destination / ".complete"
    if complete.exists():
        return destination
    for path, probability, _ in elpv_labels():
        folder = destination / ("defective" if probability >= 0.5 else "functional")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
    complete.touch()
    return destination
