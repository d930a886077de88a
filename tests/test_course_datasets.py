"""The course's datasets as their sources publish them, on files the tests make: SVHN's cropped-digits .mat files,
ImageNet class trees named by WordNet synset ids with a mapping file, and ILSVRC's flat validation folder with
LOC_val_solution.csv."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from skimage import data as photos

from conftest import invoke
from vistrain.data import matlab
from vistrain.data.matlab import COMPLETE, svhn_folder

PHOTOS = [photos.astronaut(), photos.coffee(), photos.chelsea(), photos.rocket()]


def crops(n: int, seed: int, size: int = 32) -> np.ndarray:
    """n RGB crops of scikit-image's photos, as SVHN stores them: size x size x 3 x n uint8."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(n):
        photo = PHOTOS[i % len(PHOTOS)]
        top, left = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        found.append(photo[top:top + size, left:left + size])
    return np.stack(found, axis=3)


def svhn_labels(n: int) -> np.ndarray:
    """SVHN's y: n x 1 doubles, 1-10 in turn (10: the digit 0)."""
    return (np.arange(n) % 10 + 1).reshape(-1, 1).astype(float)


def write_mat(path: Path, compress: bool = True, **variables) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, variables, do_compression=compress)
    return path


def fails_clearly(*args) -> str:
    """Run the command line; it must fail with exit code 1 and one line, no traceback. Returns that line."""
    result = invoke(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def svhn(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """downloads/train_32x32.mat with 40 crops, 4 of each digit; (its path, X, y)."""
    images, labels = crops(40, seed=0), svhn_labels(40)
    return write_mat(tmp_path / "downloads" / "train_32x32.mat", X=images, y=labels), images, labels


@pytest.mark.usefixtures("sources_unchanged")
def test_split_writes_digit_folders_of_pixel_exact_pngs(svhn, tmp_path: Path):
    mat, images, labels = svhn
    result = invoke("split", mat, tmp_path / "digits")
    assert result.exit_code == 0, result.output
    assert "40 images read" in result.stderr and "(copy)" in result.stderr
    written = sorted((tmp_path / "digits").glob("*/*/*.png"))
    assert {p.parent.parent.name for p in written} == {"train", "val"}
    assert Counter(p.parent.name for p in written) == {str(d): 4 for d in range(10)}
    assert sorted(int(p.stem) for p in written) == list(range(1, 41))  # each image once, named by its position
    for png in written:
        index = int(png.stem) - 1
        assert png.parent.name == str(int(labels[index, 0]) % 10)  # label 10 is the digit 0
        assert np.array_equal(np.asarray(Image.open(png)), images[..., index])
        assert png.stat().st_nlink == 1  # copies: the cache's PNGs are not linked into DEST


def test_a_conversion_cut_short_is_redone_and_a_complete_one_is_reused(svhn, tmp_path: Path, monkeypatch):
    mat, images, _ = svhn
    folder, count = svhn_folder(mat, tmp_path / "cache")
    assert count == 40 and folder.parent == tmp_path / "cache" / "datasets"
    damaged = next(folder.glob("3/*.png"))
    damaged.write_bytes(b"half a PNG")
    (folder / COMPLETE).unlink()  # as if the conversion had stopped before its marker
    assert svhn_folder(mat, tmp_path / "cache") == (folder, 40)
    assert np.array_equal(np.asarray(Image.open(damaged)), images[..., int(damaged.stem) - 1])
    monkeypatch.setattr(matlab, "read_svhn", lambda path: pytest.fail("a complete conversion was read again"))
    assert svhn_folder(mat, tmp_path / "cache") == (folder, 40)


def test_audit_reads_a_mat_as_train_does(svhn, tmp_path: Path):
    mat, _, _ = svhn
    result = invoke("audit", mat, "--folds", "2", "--out", tmp_path / "audit")
    assert result.exit_code == 0, result.output
    audited = list(csv.DictReader(open(tmp_path / "audit" / "predictions.csv", newline="")))
    assert len(audited) == 40 and {Path(row["file"]).parent.name for row in audited} == {str(d) for d in range(10)}
    assert "is a file: DATA is a folder or an SVHN .mat file" in invoke("audit", tmp_path / "audit" / "audit.csv").output


@pytest.mark.slow
def test_train_on_a_mat_then_evaluate_on_another(svhn, tmp_path: Path):
    mat, _, _ = svhn
    test_mat = write_mat(tmp_path / "downloads" / "test_32x32.mat", X=crops(20, seed=1), y=svhn_labels(20))
    run = tmp_path / "run"
    result = invoke("train", mat, "--out", run, "--epochs", "2")
    assert result.exit_code == 0, result.output
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["n_train"] + trained["n_images"] == 40  # every image of the file, training and validation
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == [str(d) for d in range(10)] and config["data"]["source"] == str(mat.resolve())
    result = invoke("evaluate", run, test_mat, "--format", "json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_images"] == 20 and set(metrics["per_class"]) == {str(d) for d in range(10)}


def v73_file(path: Path) -> Path:
    """What MATLAB's `save -v7.3` writes: a 128-byte text header, then HDF5 from byte 512."""
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Nov 30 12:00:00 2026 HDF5 schema 1.00 ."
    path.write_bytes(header.ljust(116, b" ") + bytes(8) + b"\x00\x02IM" + bytes(384) + b"\x89HDF\r\n\x1a\n" + bytes(64))
    return path


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no room on disk."""
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def declaring(path: Path, n: int) -> Path:
    """A small uncompressed SVHN file whose header declares n images (the pixels stay those of 5)."""
    write_mat(path, compress=False, X=crops(5, seed=2), y=svhn_labels(5))
    dims = np.array([32, 32, 3, 5], "<i4").tobytes()
    path.write_bytes(path.read_bytes().replace(dims, np.array([32, 32, 3, n], "<i4").tobytes(), 1))
    return path


def cell(*items) -> np.ndarray:
    """A MATLAB cell array (savemat writes object arrays as cells)."""
    found = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        found[0, i] = item
    return found


X, Y = crops(10, seed=3), svhn_labels(10)
BAD = {
    "v7.3 (HDF5)": (lambda p: v73_file(p), "is a MATLAB 7.3 (HDF5) file"),
    "a PNG named .mat": (lambda p: Image.fromarray(X[..., 0]).save(p, format="PNG"), "is not a MATLAB 5.0 MAT-file"),
    "empty": (lambda p: p.write_bytes(b""), "is not a MATLAB 5.0 MAT-file"),
    "truncated": (lambda p: p.write_bytes(write_mat(p, y=Y, X=X).read_bytes()[:2000]), "damaged or truncated"),
    "no y": (lambda p: write_mat(p, X=X, labels=Y), "holds X, labels; expected"),
    "28 x 28 images": (lambda p: write_mat(p, X=crops(10, seed=3, size=28), y=Y), "X is 28 x 28 x 3 x 10"),
    "one image as 3-D": (lambda p: write_mat(p, X=X[..., 0], y=Y[:1]), "X is 32 x 32 x 3;"),
    "X as doubles": (lambda p: write_mat(p, X=X.astype(float), y=Y), "X is a double array"),
    "X a cell array": (lambda p: write_mat(p, X=cell(X, X), y=Y), "X is a cell array"),
    "y a cell array": (lambda p: write_mat(p, X=X, y=np.array([["1"]] * 10, dtype=object)), "y is a cell array"),
    "y a struct": (lambda p: write_mat(p, X=X, y={"digit": 1}), "y is a struct array"),
    "y of text": (lambda p: write_mat(p, X=X, y=np.array(["1"] * 10)), "y is a char array"),
    "y too short": (lambda p: write_mat(p, X=X, y=Y[:9]), "y is 9 x 1 for 10 images"),
    "y as a row": (lambda p: write_mat(p, X=X, y=Y.T), "y is 1 x 10 for 10 images"),
    "y of 11": (lambda p: write_mat(p, X=X, y=np.where(Y == 4, 11, Y)), "the label of image 4 is 11 (1 label(s)"),
    "y of 0": (lambda p: write_mat(p, X=X, y=Y - 1), "the label of image 1 is 0 (1 label(s)"),
    "y of 2.5": (lambda p: write_mat(p, X=X, y=Y + 0.5), "the label of image 1 is 1.5 (10 label(s)"),
    "y of NaN": (lambda p: write_mat(p, X=X, y=np.where(Y == 2, np.nan, Y)), "the label of image 2 is nan"),
    "an absurd size": (lambda p: declaring(p, 100_000_000), "X declares 100,000,000 images (286.1 GiB), over"),
    "a 3 GiB file": (lambda p: sparse(p, 3 * 2**30), "3,072 MiB is over the limit of 2,048 MiB"),
}
LOADED = ("truncated", "y of 11", "y of 0", "y of 2.5", "y of NaN")  # the values must be read to be refused


@pytest.mark.parametrize("case", BAD)
def test_what_is_not_svhn_is_refused_in_one_clear_line(case: str, tmp_path: Path, monkeypatch):
    make, message = BAD[case]
    path = tmp_path / "data.mat"
    make(path)
    loads = []
    monkeypatch.setattr(scipy.io, "loadmat", lambda *args, real=scipy.io.loadmat, **kwargs: (
        loads.append(args), real(*args, **kwargs))[1])
    line = fails_clearly("split", path, tmp_path / "out")
    assert message in line and str(path) in line
    assert bool(loads) == (case in LOADED), "loaded before it was checked"
    assert not (tmp_path / "out").exists()


def test_data_that_is_a_file_must_be_a_mat(tmp_path: Path):
    (tmp_path / "labels.csv").write_text("path,label\n")
    line = invoke("train", tmp_path / "labels.csv").stderr
    assert "is a file: DATA is a folder or an SVHN .mat file; give a CSV list with --labels" in line


SYNSETS = {"n02123045": photos.chelsea(), "n07920052": photos.coffee(), "n04266014": photos.rocket()}
MAPPING = ("n01440764 tench, Tinca tinca\nn02123045 tabby, tabby cat\nn04266014 space shuttle\n"
           "n07920052 espresso\n")  # as LOC_synset_mapping.txt writes it


def photo_crops(photo: np.ndarray, n: int, seed: int) -> list[Image.Image]:
    """n square crops of a photo, 64 x 64."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(n):
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2])))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        found.append(Image.fromarray(photo[top:top + side, left:left + side]).resize((64, 64)))
    return found


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """ILSVRC as Kaggle ships it, small: train/<synset>/<synset>_<n>.JPEG (8 photo crops each),
    LOC_synset_mapping.txt, a flat val/ folder and LOC_val_solution.csv."""
    root = tmp_path_factory.mktemp("imagenet")
    for seed, (synset, photo) in enumerate(SYNSETS.items()):
        (root / "train" / synset).mkdir(parents=True)
        for i, image in enumerate(photo_crops(photo, 8, seed)):
            image.save(root / "train" / synset / f"{synset}_{i}.JPEG", format="JPEG")
    (root / "LOC_synset_mapping.txt").write_text(MAPPING)
    (root / "val").mkdir()
    rows = ["ImageId,PredictionString"]
    for seed, (synset, photo) in enumerate(SYNSETS.items()):
        for i, image in enumerate(photo_crops(photo, 2, 10 + seed), 2 * seed + 1):
            image.save(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", format="JPEG")
            rows.append(f"ILSVRC2012_val_{i:08d},{synset} 10 20 60 62 {synset} 0 0 30 30 ")
    rows += ["ILSVRC2012_val_00000099,n02123045 1 1 5 5", "ILSVRC2012_val_00000001,"]  # no such image; no label
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def named_run(imagenet: Path, tmp_path_factory) -> tuple[Path, str]:
    """A run trained on the synset folders with --class-names; (its directory, what train printed)."""
    run = tmp_path_factory.mktemp("runs") / "imagenet"
    result = invoke("train", imagenet / "train", "--class-names", imagenet / "LOC_synset_mapping.txt", "--out", run,
                    "--epochs", "5")
    assert result.exit_code == 0, result.output
    return run, result.output


@pytest.mark.slow
def test_training_with_class_names_keeps_the_ids_and_saves_the_names(named_run):
    run, printed = named_run
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["n02123045", "n04266014", "n07920052"]  # the folder names stay the classes
    assert config["class_names"] == {"n02123045": "tabby", "n04266014": "space shuttle", "n07920052": "espresso"}
    assert "0 = n02123045 (tabby)" in printed and "LOC_synset_mapping.txt: 3 of 3 classes" in printed
    assert {"tabby", "space shuttle", "espresso"} <= set(json.loads((run / "metrics.json").read_text())["per_class"])


@pytest.mark.slow
def test_predict_shows_the_names(named_run, imagenet: Path):
    run, _ = named_run
    cat = imagenet / "train" / "n02123045" / "n02123045_0.JPEG"
    result = invoke("predict", run, cat, "--format", "json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["class"] == "tabby" and {name for name, _ in row["top"]} == {"tabby", "space shuttle", "espresso"}
    rows = invoke("predict", run, cat, "--format", "csv").stdout.splitlines()
    assert rows[1].split(",")[1] == "tabby" and "space shuttle:" in rows[1]


@pytest.mark.slow
def test_the_report_inspect_evaluate_serve_and_export_show_the_names(named_run, imagenet: Path):
    import asyncio

    from vistrain.deploy.export import metadata
    from vistrain.deploy.serve import create_app
    from vistrain.model.predictor import Predictor

    run, _ = named_run
    report = (run / "report.html").read_text()
    assert "classes tabby, space shuttle, espresso" in report and "<h4>predicted space shuttle</h4>" in report
    assert "<td>espresso</td>" in report  # the per-class table
    assert "predicted tabby" in invoke("inspect", run).stdout
    metrics = json.loads(invoke("evaluate", run, imagenet / "train", "--format", "json").stdout)
    assert set(metrics["per_class"]) == {"tabby", "space shuttle", "espresso"}
    app = create_app(run)
    endpoints = {route.path: route.endpoint for route in app.routes}
    assert "classes: tabby, space shuttle, espresso" in asyncio.run(endpoints["/"]())
    assert asyncio.run(endpoints["/health"]())["class_names"]["n02123045"] == "tabby"
    assert json.loads(metadata(Predictor.from_run(run))["class_names"])["n07920052"] == "espresso"


@pytest.mark.slow
def test_ids_the_mapping_lacks_are_shown_as_ids_and_counted(imagenet: Path, tmp_path: Path):
    mapping = tmp_path / "words.txt"  # words.txt's layout: a tab after the id
    mapping.write_text("n02123045\ttabby, tabby cat\nn07920052\tespresso\n")
    result = invoke("train", imagenet / "train", "--class-names", mapping, "--out", tmp_path / "run", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "words.txt: 2 of 3 classes; 1 not in it, shown by their ids: n04266014" in result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["class_names"] == {
        "n02123045": "tabby", "n07920052": "espresso"}
    rocket = imagenet / "train" / "n04266014" / "n04266014_0.JPEG"
    top = json.loads(invoke("predict", tmp_path / "run", rocket, "--format", "json").stdout)[0]["top"]
    assert {name for name, _ in top} == {"tabby", "n04266014", "espresso"}


def test_class_names_are_read_and_shown_one_way(tmp_path: Path):
    from vistrain.data.class_names import class_labels, read_class_names
    from vistrain.data.samples import DataError

    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n02012849 crane\nn03126707 crane\n\nn02123045   tabby, tabby cat\n")
    names = read_class_names(mapping)
    assert names == {"n02012849": "crane", "n03126707": "crane", "n02123045": "tabby"}
    # ImageNet has two cranes, a bird and a machine: each keeps its id after the name; an unnamed class is its id
    assert class_labels(["n02012849", "n03126707", "n02123045", "n99"], names) == [
        "crane (n02012849)", "crane (n03126707)", "tabby", "n99"]
    mapping.write_text("n02123045 tabby\nn07920052\n")
    with pytest.raises(DataError, match="line 2: 'n07920052' is not an id followed by names"):
        read_class_names(mapping)


@pytest.mark.slow
def test_a_config_whose_class_names_do_not_fit_its_classes_is_damaged(named_run, tmp_path: Path):
    import shutil

    from vistrain.model.run_dir import RunError, read_config

    run = shutil.copytree(named_run[0], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    for names, problem in (([], "not an object"), ({"n0": "x"}, "names 'n0', which is not one of the classes"),
                           ({"n02123045": 3}, "gives 'n02123045' the name 3, not a name")):
        (run / "config.json").write_text(json.dumps({**config, "class_names": names}))
        with pytest.raises(RunError, match=problem):
            read_config(run)


def test_the_ilsvrc_validation_csv_is_recognised_by_its_header(imagenet: Path):
    from vistrain.data.labels_csv import read_label_csv

    table = read_label_csv(imagenet / "LOC_val_solution.csv", imagenet / "val")
    assert [(row.path.name, row.cells) for row in table.rows[:2]] == [
        ("ILSVRC2012_val_00000001.JPEG", ("n02123045",)), ("ILSVRC2012_val_00000002.JPEG", ("n02123045",))]
    assert len(table.rows) == 6
    assert sorted(s.reason.split(": ")[1] for s in table.skipped) == ["empty label", "no such file"]


def test_a_label_csv_over_the_size_limit_is_refused_unread(tmp_path: Path):
    from vistrain.core.files import MAX_FILE_BYTES
    from vistrain.data.labels_csv import read_label_csv
    from vistrain.data.samples import DataError

    with pytest.raises(DataError, match="MiB is over the limit of 256 MiB"):
        read_label_csv(sparse(tmp_path / "LOC_val_solution.csv", MAX_FILE_BYTES + 2**20))


@pytest.mark.slow
def test_evaluate_on_the_ilsvrc_validation_folder(named_run, imagenet: Path):
    run, _ = named_run
    result = invoke("evaluate", run, "--labels", imagenet / "LOC_val_solution.csv", "--image-root", imagenet / "val",
                    "--format", "json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_images"] == 6 and {name: m["support"] for name, m in metrics["per_class"].items()} == {
        "tabby": 2, "space shuttle": 2, "espresso": 2}
    assert len(metrics["skipped"]) == 2


def test_a_header_claiming_a_billion_images_is_refused_within_little_memory(tmp_path: Path):
    """Held from round 1 (issue 26): refused from the header, before a pixel is allocated or read."""
    from test_hostile_serve import peak_memory

    path = declaring(tmp_path / "train_32x32.mat", 1_000_000_000)
    finished, peak = peak_memory("split", str(path), str(tmp_path / "digits"), "--cache-dir", str(tmp_path / "c"))
    assert finished.returncode == 1 and "X declares 1,000,000,000 images" in finished.stderr, finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1 and peak < 400 * 2**20, f"{peak / 2**20:.0f} MiB"
