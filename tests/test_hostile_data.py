"""Hostile input (issue 13): no data loss, no crash, no runaway memory, no hang. Each probe is a test on real files:
FIFOs, a link to /dev/zero, a 3 GB sparse file, folder links that loop or climb, CSVs that point at /etc, splits
into their own sources, and file names that look like rich markup. Commands that could hang run in a process of
their own with a timeout; every split runs under `sources_unchanged` (its sources come out byte for byte as they
went in)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from conftest import invoke, shape_image, tree_state, write_class_folders
from vistrain.core.files import sha256_file
from vistrain.data.datasets import load_dataset
from vistrain.data.images import UnreadableImage, load_rgb


pytestmark = pytest.mark.usefixtures("sources_unchanged")

GIB = 2**30


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocking open or a read that never ends."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that uses no disk."""
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def test_the_one_opener_refuses_fifos_devices_and_huge_files_before_reading(tmp_path: Path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    big = sparse(tmp_path / "big.jpg", 3 * GIB)
    with deadline(30):
        for path, reason in ((fifo, r"not a regular file \(FIFO\)"), (zero, r"\(character device\)"),
                             (big, "3,072 MiB is over the limit of 256 MiB")):
            with pytest.raises(OSError, match=reason):
                sha256_file(path)
            with pytest.raises(UnreadableImage, match=reason):
                load_rgb(path)


def test_folder_links_are_not_followed_but_reported(tmp_path: Path):
    root = write_class_folders(tmp_path / "data", 4)
    (root / "circle" / "loop").symlink_to(".")
    (root / "circle" / "up").symlink_to("..")
    (root / "square" / "elsewhere").symlink_to(write_class_folders(tmp_path / "other", 3))
    with deadline(60):  # followed, `loop` and `up` make a listing without end
        dataset = load_dataset(root)
    names = Counter(s.path.name for s in dataset.train + dataset.val)
    assert sorted(names) == sorted(p.name for p in root.glob("*/*.png")) and set(names.values()) == {1}
    assert {(s.path.relative_to(root).as_posix(), s.reason) for s in dataset.skipped} == {
        (link, "directory link not followed") for link in ("circle/loop", "circle/up", "square/elsewhere")}


def test_names_that_look_like_rich_markup_are_printed_as_they_are(tmp_path: Path):
    """`[/]` in a printed name stopped the command with rich's MarkupError; `[b]` vanished from it."""
    root = write_class_folders(tmp_path / "data", 4, classes=("[b]circle", "square"))
    duplicate = root / "[b]circle" / "[red]dup["
    duplicate.mkdir()
    (duplicate / "].png").write_bytes((root / "[b]circle" / "[b]circle_0.png").read_bytes())
    checked = invoke("check", root, "--out", tmp_path / "check")
    assert checked.exit_code == 0, checked.output
    assert "│ [b]circle " in checked.stdout
    assert f"{root}/[b]circle/[b]circle_0.png  ~  {duplicate}/].png" in checked.stdout
    split = invoke("split", root, tmp_path / "out")
    assert split.exit_code == 0, split.output
    assert "│ [b]circle │" in split.stdout


def vistrain(*args, timeout: int) -> subprocess.CompletedProcess:
    """The command line in a process of its own; a hang fails the test at `timeout` instead of blocking CI."""
    return subprocess.run([sys.executable, "-m", "vistrain", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


# What each hostile entry of `hostile` must be reported with.
REASONS = {
    "circle/fifo.png": "not a regular file (FIFO)",
    "circle/zero.jpg": "not a regular file (character device)",
    "square/big.jpg": "over the limit of 256 MiB",
    "circle/loop": "directory link not followed",
    "square/up": "directory link not followed",
    "circle/oops[/].png": "not an image",  # a folder `oops[` holding `].png`
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """Two classes of 8 shapes each, plus a FIFO, a link to /dev/zero, a 3 GB sparse file, a folder link to
    itself (`ln -s . loop`, which listed each circle 40 times), one to its parent (`ln -s .. up`, which labelled
    every circle a square) and an unreadable file whose path is rich markup (`[/]` stopped the command with a
    MarkupError)."""
    root = write_class_folders(tmp_path_factory.mktemp("hostile") / "data", 8)
    os.mkfifo(root / "circle" / "fifo.png")
    (root / "circle" / "zero.jpg").symlink_to("/dev/zero")
    sparse(root / "square" / "big.jpg", 3 * GIB)
    (root / "circle" / "loop").symlink_to(".")
    (root / "square" / "up").symlink_to("..")
    (root / "circle" / "oops[").mkdir()
    (root / "circle" / "oops[" / "].png").write_bytes(b"not an image")
    return root


def assert_reported(listing: str, root: Path) -> None:
    """Each hostile entry of `root` appears in `listing` (one line per file) with its reason."""
    lines = listing.splitlines()
    for name, reason in REASONS.items():
        assert any(str(root / name) in line and reason in line for line in lines), f"{name}: {reason}\n{listing}"


@pytest.fixture(scope="module")
def trained(hostile: Path, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    run = tmp_path_factory.mktemp("runs") / "hostile"
    return vistrain("train", hostile, "--out", run, "--epochs", "2", timeout=600), run


@pytest.mark.slow
def test_train_finishes_and_lists_each_hostile_file_with_its_reason(hostile: Path, trained):
    result, run = trained
    assert result.returncode == 0, result.stderr
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["n_train"] + data["n_val"] == 16  # each shape once, none relabelled
    assert_reported(result.stderr, hostile)
    with open(run / "skipped.csv", newline="") as file:
        assert_reported("\n".join(f"{row['file']}: {row['reason']}" for row in csv.DictReader(file)), hostile)


@pytest.mark.slow
def test_predict_finishes_and_lists_each_hostile_file_with_its_reason(hostile: Path, trained):
    result = vistrain("predict", trained[1], hostile, "--format", "csv", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert_reported("\n".join(f"{row['file']}: {row['error']}" for row in rows), hostile)
    assert Counter(bool(row["class"]) for row in rows) == {True: 16, False: len(REASONS)}


def test_check_finishes_and_lists_each_hostile_file_with_its_reason(hostile: Path, tmp_path: Path):
    result = vistrain("check", hostile, "--out", tmp_path / "check", timeout=300)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "check" / "unreadable.csv", newline="") as file:
        unreadable = list(csv.DictReader(file))
    assert len(unreadable) == len(REASONS)
    assert_reported("\n".join(f"{row['file']}: {row['reason']}" for row in unreadable), hostile)


def write_csv_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    return path


def test_csv_paths_must_stay_inside_the_image_root(tmp_path: Path):
    """A label CSV cannot make `split` copy /etc/passwd or `train --labels` read it: paths are resolved (links
    followed) and must lie inside --image-root (default: the CSV's folder); the others are skipped by line."""
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    for i in range(4):
        shape_image("circle", i, 32).save(src / "img" / f"c{i}.png")
        shape_image("square", i, 32).save(src / "img" / f"s{i}.png")
    shape_image("circle", 9, 32).save(tmp_path / "outside.png")
    (src / "img" / "evil.png").symlink_to("/etc/passwd")
    hostile = ["/etc/passwd,circle", "/proc/self/environ,circle", "../outside.png,square", "img/evil.png,square",
               "img/../../outside.png,square"]
    good = [f"img/c{i}.png,circle" for i in range(4)] + [f"img/s{i}.png,square" for i in range(4)]
    labels = write_csv_rows(src / "labels.csv", good + hostile)
    outside = {f"labels.csv line {line}: outside the image root" for line in range(10, 15)}
    dataset = load_dataset(labels)  # what `train --labels` reads
    assert len(dataset.train + dataset.val) == 8
    assert {s.reason.split(f" {src}")[0] for s in dataset.skipped} == outside
    result = invoke("split", labels, tmp_path / "out", "--copy")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*/*/*")) == sorted(r.split(",")[0][4:] for r in good)
    assert all(f"line {line}: outside the image root" in result.stderr for line in range(10, 15))


@pytest.mark.parametrize("mode", ["--link=hardlink", "--copy", "--symlink"])
def test_split_refuses_a_destination_inside_its_source_or_around_it(tmp_path: Path, mode: str):
    """`split SRC SRC --force` deleted an original per run (hard links, copies) or left self-referencing links
    (--symlink); DEST inside SRC, or SRC inside DEST, is refused before anything is written."""
    src = write_class_folders(tmp_path / "src", 3)
    for dest in (src, src / "out", src / "circle"):
        result = invoke("split", src, dest, mode, "--force")
        assert result.exit_code == 1 and "is inside the source" in result.stderr, result.output
    assert not (src / "out").exists()
    outer = write_class_folders(tmp_path / "outer", 3)
    result = invoke("split", outer / "circle", outer, mode, "--force", "--pattern", "(?P<label>[a-z]+)_")
    assert result.exit_code == 1 and "is inside" in result.stderr and "choose a DEST outside" in result.stderr
    labels = write_csv_rows(src / "labels.csv", [f"circle/circle_{i}.png,c" for i in range(3)]
                            + [f"square/square_{i}.png,s" for i in range(3)])
    result = invoke("split", labels, src / "out", mode, "--force")  # a CSV's source is its image root
    assert result.exit_code == 1 and "is inside the source" in result.stderr


def test_a_re_split_never_removes_the_last_link_to_one_of_its_inputs(tmp_path: Path):
    """A source whose file is a link into DEST (to a copy an earlier split placed there): re-splitting with --force
    keeps that copy (the link's only data) and does not place the link's target again."""
    src = write_class_folders(tmp_path / "src", 3)
    out = tmp_path / "out"
    assert invoke("split", src, out, "--copy").exit_code == 0
    copied = next((out / "train" / "circle").iterdir())
    (src / "circle" / "kept.png").symlink_to(copied)
    data = copied.read_bytes()
    result = invoke("split", src, out, "--copy", "--force")
    assert result.exit_code == 0, result.output
    assert (src / "circle" / "kept.png").read_bytes() == data
    assert "kept.png: not placed: it lies inside" in result.stderr


def test_a_re_split_never_follows_a_link_out_of_dest(tmp_path: Path):
    """DEST/train moved elsewhere and linked back: a re-split removes nothing there and writes nothing through the
    link; it stops with a message."""
    src = write_class_folders(tmp_path / "src", 3)
    out = tmp_path / "out"
    assert invoke("split", src, out).exit_code == 0
    (out / "train").rename(tmp_path / "elsewhere")
    (out / "train").symlink_to(tmp_path / "elsewhere")
    before = tree_state(tmp_path / "elsewhere")
    result = invoke("split", src, out, "--force", "--seed", "1")
    assert result.exit_code == 1 and "is a link" in result.stderr
    assert tree_state(tmp_path / "elsewhere") == before


@pytest.mark.parametrize("mode", ["--link=hardlink", "--copy", "--symlink"])
def test_split_skips_what_it_cannot_place_and_leaves_no_partial_file(tmp_path: Path, mode: str):
    """A FIFO, a dangling link, a file over the size limit (and, for a user who cannot read it, a file without read
    permission) are skipped with their reason in every mode; DEST holds whole files only."""
    src = write_class_folders(tmp_path / "src", 3)
    os.mkfifo(src / "circle" / "fifo.png")
    (src / "circle" / "gone.png").symlink_to(tmp_path / "nothing.png")
    sparse(src / "square" / "big.png", 300 * 2**20)
    locked = src / "square" / "locked.png"
    shape_image("square", 7, 32).save(locked)
    locked.chmod(0)
    reasons = {"fifo.png": "not a regular file (FIFO)", "gone.png": "No such file or directory",
               "big.png": "over the limit of 256 MiB"}
    with deadline(60):
        result = invoke("split", src, tmp_path / "out", mode, "--val-fraction", "0.01")
    assert result.exit_code == 0, result.output
    for name, reason in reasons.items():
        assert any(f"{name}: not placed: " in line and reason in line for line in result.stderr.splitlines()), name
    readable = os.access(locked, os.R_OK)  # root reads it anyway
    assert readable or "locked.png: not placed" in result.stderr and "Permission denied" in result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*/*/*")) == sorted(
        [p.name for p in src.glob("*/*_*.png")] + (["locked.png"] if readable else []))
    assert not list(out.rglob(".*.tmp"))
    for path in out.glob("*/*/*"):
        assert path.resolve().read_bytes() == (src / path.parent.name / path.name).read_bytes()


def test_a_copy_that_fails_halfway_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    """A read error in the middle of a copy: the file is skipped with the reason, and DEST holds no part of it (nor
    a class folder left empty)."""
    from vistrain.data import placement

    def fails_halfway(source, out, length=0):
        out.write(source.read(100))
        raise OSError(5, "Input/output error")

    src = write_class_folders(tmp_path / "src", 3)
    monkeypatch.setattr(placement.shutil, "copyfileobj", fails_halfway)
    result = invoke("split", src, tmp_path / "out", "--copy")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("not placed: Input/output error") == 6
    assert [p.name for p in (tmp_path / "out").rglob("*")] == [".vistrain-split.json"]


def test_an_interrupted_split_is_taken_back_by_the_next(tmp_path: Path, monkeypatch):
    """The manifest is written before any file is placed: after Ctrl-C (or kill -9, which leaves a copy's temporary
    file), `split --force` still gives exactly the new split."""
    from vistrain.data import organise

    src = write_class_folders(tmp_path / "src", 6)
    out = tmp_path / "out"
    place, placed = organise.place, []

    def interrupted(*args):
        if len(placed) == 7:
            raise KeyboardInterrupt
        placed.append(place(*args))
        return placed[-1]

    monkeypatch.setattr(organise, "place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        organise.split_dataset(src, out, mode="copy")
    monkeypatch.setattr(organise, "place", place)
    planned = json.loads((out / ".vistrain-split.json").read_text())["files"]
    assert len(list(out.glob("*/*/*"))) == 7 and len(planned) == 12
    unplaced = next(path for path in (out / entry["path"] for entry in planned)
                    if not path.exists() and path.parent.is_dir())  # killed while copying it
    partial = unplaced.parent / f".{unplaced.name}.k1ll3d.tmp"  # what write_atomic leaves when killed
    partial.write_bytes(b"half a copy")
    organise.split_dataset(src, out, seed=1, force=True)
    organise.split_dataset(src, tmp_path / "fresh", seed=1)
    relative = lambda root: sorted(p.relative_to(root) for p in root.rglob("*"))  # noqa: E731
    assert relative(out) == relative(tmp_path / "fresh")


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A 40 x 40 PNG with one more chunk after its header."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(buffer, "PNG")
    png = buffer.getvalue()
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return png[:33] + chunk + png[33:]  # the signature and IHDR are 33 bytes


def test_png_text_and_icc_bombs_are_skipped_within_little_memory(tmp_path: Path):
    """Held from round 1 (issue 26): 200 MB of zeros compressed to 194 KB, as a text chunk or an ICC profile."""
    import zlib

    from test_hostile_serve import peak_memory

    bomb = zlib.compress(bytes(200_000_000), 9)
    data = write_class_folders(tmp_path / "data", 3)
    for name, chunk in (("ztxt.png", b"zTXt" + b"Comment\0\0"), ("itxt.png", b"iTXt" + b"Comment\0\1\0\0\0"),
                        ("iccp.png", b"iCCP" + b"icc\0\0")):
        (data / "circle" / name).write_bytes(png_with_chunk(chunk[:4], chunk[4:] + bomb))
    finished, peak = peak_memory("check", str(data), "--out", str(tmp_path / "check"))
    assert finished.returncode == 0, finished.stderr
    unreadable = (tmp_path / "check" / "unreadable.csv").read_text()
    assert all(f"{name},cannot decode: Decompressed data too large" in unreadable
               for name in ("ztxt.png", "itxt.png", "iccp.png")), unreadable
    assert peak < 400 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
