"""Hostile names, round 2 (issue 26): escape codes in class and file names, file names that are not UTF-8, and class
name mappings with huge or duplicated lines. Each runs the real command in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import invoke, shape_image
from test_hostile_runs import fails_clearly

ESC_CLASSES = ("cat\x1b[31m", "dog\x1b]0;pwned\x07")  # red text; a terminal title set, then BEL
ESC_FILE = "photo\x1b[2J\u202e.png"  # clears the screen; a right-to-left override


def vistrain(*args, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`vistrain ARGS...` in a child process; output as bytes, exactly as a terminal would get it."""
    return subprocess.run([sys.executable, "-m", "vistrain", *map(os.fsencode, map(str, args))], capture_output=True,
                          timeout=timeout, cwd=cwd)


def folder_of_shapes(root: Path, classes: tuple[str, ...], per_class: int = 6, name: str = "{i}.png") -> Path:
    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            shape_image(("circle", "square")[c % 2], seed=100 * c + i, size=40).save(root / label / name.format(i=i))
    return root


@pytest.mark.slow
def test_escape_codes_in_names_never_reach_the_terminal(tmp_path: Path):
    data = folder_of_shapes(tmp_path / "data", ESC_CLASSES)
    for label in ESC_CLASSES:
        (data / label / "0.png").rename(data / label / ESC_FILE)
    run = tmp_path / "run"
    outputs = [invoke("train", data, "--out", run, "--head", "logistic")]
    assert outputs[0].exit_code == 0, outputs[0].output
    outputs += [invoke("predict", run, data), invoke("predict", run, data, "--format", "csv"),
                invoke("evaluate", run, data), invoke("check", data, "--out", tmp_path / "check"),
                invoke("predict", run, data / "missing\x1b[2J.png")]
    for result in outputs:
        text = result.stdout + result.stderr
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, text[-2000:]
    shown = "".join(result.stdout + result.stderr for result in outputs)
    assert "dog\\x1b]0;pwned\\x07" in shown and "photo\\x1b[2J\\u202e.png" in shown  # named, visibly


def test_an_error_naming_a_class_shows_its_escape_codes_escaped(tmp_path: Path):
    data = folder_of_shapes(tmp_path / "data", ESC_CLASSES[1:], per_class=1)  # a single class: refused, named
    finished = vistrain("train", data, "--out", tmp_path / "run")
    assert finished.returncode == 1 and b"\x1b" not in finished.stderr and b"\x07" not in finished.stderr
    assert "dog\\x1b]0;pwned\\x07" in finished.stderr.decode() and b"Traceback" not in finished.stderr


@pytest.fixture
def latin1_names(tmp_path: Path) -> Path:
    """Two classes of shapes, with a file and a whole class folder named in Latin-1 (b'caf\\xe9'), not UTF-8."""
    data = folder_of_shapes(tmp_path / "data", ("circle", "square"))
    os.rename(data / "circle" / "0.png", os.fsencode(data / "circle") + b"/caf\xe9.png")
    folder_of_shapes(Path(os.fsdecode(os.fsencode(data) + b"/d\xe9j\xe0")), ("sub",), per_class=2)
    return data


def test_names_that_are_not_utf8_are_skipped_and_named_by_audit_and_check(latin1_names: Path, tmp_path: Path):
    audit = invoke("audit", latin1_names, "--folds", "2", "--out", tmp_path / "audit")
    check = invoke("check", latin1_names, "--out", tmp_path / "check")
    for result in (audit, check):
        assert result.exit_code == 0, result.output
    assert "caf\\xe9.png: name is not UTF-8" in audit.stderr and "d\\xe9j\\xe0: name is not UTF-8" in audit.stderr
    assert len((tmp_path / "audit" / "predictions.csv").read_text().splitlines()) == 1 + 5 + 6  # the other images
    assert "caf\\xe9.png" in (tmp_path / "audit" / "audit.html").read_text()  # among the skipped files
    assert "caf\\xe9.png" in (tmp_path / "check" / "unreadable.csv").read_text()


@pytest.mark.slow
def test_a_name_that_is_not_utf8_given_to_predict_is_skipped_in_every_format(latin1_names: Path, run: Path):
    given = os.fsdecode(os.fsencode(latin1_names / "circle") + b"/caf\xe9.png")
    for output_format in ("table", "csv", "json"):
        result = invoke("predict", run, given, latin1_names / "square" / "1.png", "--format", output_format)
        assert result.exit_code == 0, result.output
        assert ("caf\\udce9.png" if output_format == "json" else "caf\\xe9.png") in result.stdout  # JSON: exact
        assert "not UTF-8" in result.stdout or output_format == "table"  # the table wraps the reason
    assert [row["error"] != "" for row in json.loads(result.stdout)] == [False, True]  # predicted, then skipped


@pytest.mark.slow
@pytest.mark.parametrize("line, problem", [("n01 " + "x" * 10_000_000, "a name of 10,000,000 characters"),
                                           ("n01 tabby\x1b[2J, tabby cat", "holds a control character"),
                                           ("n00 tabby", "n00 is named again (first on line 1)")],
                         ids=["10 MB", "escape code", "named twice"])
def test_class_names_are_bounded_when_they_are_read(tmp_path: Path, line: str, problem: str):
    data = folder_of_shapes(tmp_path / "data", ("n00", "n01"), per_class=2)
    (tmp_path / "names.txt").write_text(f"n00 cat, house cat\n{line}\n")
    started = time.monotonic()
    error = fails_clearly("train", data, "--class-names", tmp_path / "names.txt", "--out", tmp_path / "run")
    assert "names.txt line 2: " in error and problem in error and time.monotonic() - started < 60
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_label_csv_with_a_huge_or_unprintable_label_is_named_by_line(tmp_path: Path):
    data = folder_of_shapes(tmp_path / "data", ("cat", "dog"), per_class=3)
    rows = [f"{label}/{i}.png,{label}" for label in ("cat", "dog") for i in range(3)]
    (tmp_path / "huge.csv").write_text("\n".join(rows + ["cat/0.png," + "x" * 200_000]) + "\n")
    assert "huge.csv line 7: field larger than field limit" in fails_clearly(
        "train", "--labels", tmp_path / "huge.csv", "--image-root", data, "--out", tmp_path / "run")
    (tmp_path / "odd.csv").write_text("\n".join(rows + ["cat/0.png,cat\x1b[2J", "cat/1.png," + "y" * 300]) + "\n")
    finished = invoke("train", "--labels", tmp_path / "odd.csv", "--image-root", data, "--out", tmp_path / "run",
                      "--head", "logistic")
    assert finished.exit_code == 0, finished.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["classes"] == ["cat", "dog"]
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert "odd.csv line 7: 'cat\\x1b[2J' holds a control character" in skipped
    assert "odd.csv line 8: a name of 300 characters (at most 200)" in skipped
