"""Hostile review decisions (issue 26): what the review page accepts, and decisions files that used to fail silently.

The review page runs as `vistrain review` in a child process; every reader of a decisions file runs as the command."""

from __future__ import annotations

import csv
import json
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import invoke, write_class_folders
from test_hostile_runs import fails_clearly
from test_hostile_serve import free_port
from vistrain.data.decisions import Decisions
from vistrain.data.listing import DECISIONS_FILE


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """circle/ and square/, 8 shapes each, with circle_0.png copied as circle/dup.png: a duplicate to review."""
    data = write_class_folders(tmp_path_factory.mktemp("decisions") / "data", 8)
    shutil.copy(data / "circle" / "circle_0.png", data / "circle" / "dup.png")
    return data


@pytest.fixture
def data(shapes: Path, tmp_path: Path) -> Path:
    """A copy of the shapes for one test, whose decisions it may change."""
    return Path(shutil.copytree(shapes, tmp_path / "data"))


@pytest.fixture(scope="module")
def review(shapes: Path, tmp_path_factory):
    """`vistrain review` on a copy of the shapes: (its URL, the data folder, the server process)."""
    data = Path(shutil.copytree(shapes, tmp_path_factory.mktemp("reviewed") / "data"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vistrain", "review", str(data), "--folds", "2", "--port",
                               str(port), "--out", str(data.parent / "audit")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url + "/decisions", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"review did not start: {server.communicate()[1][-2000:]}")
            time.sleep(0.3)
    yield url, data, server
    server.kill()
    server.wait(30)


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/decision", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def relabel(url: str, label: str, new_class: bool = False) -> tuple[int, dict]:
    return post(url, json.dumps({"index": 0, "action": "relabel", "label": label, "new_class": new_class}).encode())


@pytest.mark.parametrize("label", ["wolf", "=cmd|' /C calc'!A0", "cat\ndog", "cat\rdog", "cat\x00"])
def test_a_relabel_names_one_of_the_classes(review, label: str):
    url, data, _ = review
    status, answer = relabel(url, label)
    assert status == 400 and "is not a class of circle, square" in answer["error"], answer
    assert label not in (data / DECISIONS_FILE).read_text() if (data / DECISIONS_FILE).exists() else True


@pytest.mark.parametrize("label, problem", [("=cmd|' -C calc'!A0", "starts like a spreadsheet formula"),
                                            ("cat\ndog", "holds a control character"),
                                            ("../up", "cannot name a folder"), ("x" * 201, "a name of 201")])
def test_a_new_class_on_purpose_must_make_a_folder_name(review, label: str, problem: str):
    url, data, _ = review
    status, answer = relabel(url, label, new_class=True)
    assert status == 400 and problem in answer["error"], answer


def test_a_new_class_on_purpose_is_saved_and_split_makes_its_folder(review, tmp_path: Path):
    url, data, _ = review
    status, answer = relabel(url, "wolf", new_class=True)
    assert status == 200 and answer["decision"] == {"action": "relabel", "label": "wolf"}
    finished = invoke("split", data, tmp_path / "split")
    assert finished.exit_code == 0, finished.output
    assert len(list((tmp_path / "split").glob("*/wolf/*.png"))) == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["Content-Length", "chunked"])
def test_request_bodies_are_limited(review, chunked: bool):
    """A 150 MB label (the issue's: the server went from 0.83 to 1.96 GB, and the decisions file to 157 MB) is
    refused after the first 16 KB, as soon as it is declared or has come."""
    url, data, server = review
    host, port = url.removeprefix("http://").split(":")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {150_000_000}"
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"POST /decision HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                           f"{framing}\r\n\r\n".encode())
        sent = 0
        while not select.select([connection], [], [], 0)[0] and sent < 150_000_000:
            piece = b'{"index": 0, "action": "relabel", "label": "' if sent == 0 else b"w" * 65536
            try:
                connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except OSError:
                break
            sent += len(piece)
        answer = b""
        while not answer.endswith(b"}") and (chunk := connection.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"at most 16,384 bytes" in answer, answer[:300]
    assert sent < 20_000_000  # what the sockets' buffers take, not the 150 MB
    assert not (data / DECISIONS_FILE).exists() or (data / DECISIONS_FILE).stat().st_size < 10_000
    assert server.poll() is None and relabel(url, "square")[0] == 200  # and the next request is served


def test_cells_that_look_like_formulas_are_written_quoted_and_read_back(tmp_path: Path):
    for name in ("=1+1.png", "+x.png", "-y.png", "@z.png", "'q.png"):
        (tmp_path / name).write_bytes(b"")
    decisions = Decisions(tmp_path / DECISIONS_FILE)
    decisions.decide(tmp_path / "=1+1.png", "relabel", "-1.5")
    for name in ("+x.png", "-y.png", "@z.png", "'q.png"):
        decisions.decide(tmp_path / name, "exclude")
    rows = list(csv.reader(open(tmp_path / DECISIONS_FILE)))
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
    assert ["'=1+1.png", "relabel", "'-1.5"] in rows and ["''q.png", "exclude", ""] in rows
    assert Decisions.load(tmp_path / DECISIONS_FILE).entries == decisions.entries


def write_decisions(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


MALFORMED = {
    "a 150 KB label": ("file,decision,label\ncircle/circle_1.png,relabel," + "w" * 150_000 + "\n",
                       "line 2: field larger than field limit"),
    "no header": ("circle/circle_1.png,exclude,\n", "line 1: expected the header file,decision,label"),
    "a decision twice": ("file,decision,label\ncircle/circle_1.png,exclude,\ncircle/circle_1.png,keep,\n",
                         "line 3: a second decision for circle/circle_1.png (first on line 2)"),
    "not UTF-8": (b"file,decision,label\ncircle/caf\xe9.png,exclude,\n", "can't decode byte 0xe9"),
    "a label with a newline": ('file,decision,label\ncircle/circle_1.png,relabel,"cat\ndog"\n',
                               "line 2: the label cannot name a class: 'cat\\x0adog' holds a control character"),
}


def refusal(data: Path, tmp_path: Path, command: str) -> str:
    """The one line `command` (check, split, train, evaluate, audit) gives for DATA's decisions file."""
    args = {"check": ["check", data, "--out", tmp_path / "out"], "split": ["split", data, tmp_path / "out"],
            "train": ["train", data, "--out", tmp_path / "out"], "audit": ["audit", data, "--out", tmp_path / "out"],
            "evaluate": ["evaluate", tmp_path / "no-run-needed", data]}[command]
    return fails_clearly(*args)


@pytest.mark.parametrize("malformed", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_decisions_file_is_refused_in_one_line_naming_the_line(data: Path, tmp_path: Path, malformed):
    text, problem = MALFORMED[malformed]
    write_decisions(data / DECISIONS_FILE, text)
    error = refusal(data, tmp_path, "check")
    assert f"{data / DECISIONS_FILE}" in error and problem in error


@pytest.mark.parametrize("command", ["split", "train", "audit"])
def test_every_reader_reads_decisions_files_alike(data: Path, tmp_path: Path, command: str):
    text, problem = MALFORMED["a 150 KB label"]
    write_decisions(data / DECISIONS_FILE, text)
    assert problem in refusal(data, tmp_path, command)


def test_split_refuses_a_new_class_that_makes_no_folder(data: Path, tmp_path: Path):
    write_decisions(data / DECISIONS_FILE, "file,decision,label\ncircle/circle_1.png,relabel,'=cmd|' -C calc'!A0\n")
    error = fails_clearly("split", data, tmp_path / "split")
    assert f"{data / DECISIONS_FILE} line 2: a new class" in error and "starts like a spreadsheet formula" in error
    assert not (tmp_path / "split").exists()


def test_a_decisions_file_kept_outside_the_data_folder_is_applied(data: Path, tmp_path: Path):
    outside = write_decisions(tmp_path / "elsewhere.csv",
                              "file,decision,label\ncircle/circle_1.png,exclude,\nsquare/square_2.png,relabel,circle\n")
    finished = invoke("check", data, "--decisions", outside, "--out", tmp_path / "check")
    assert finished.exit_code == 0, finished.output
    images = {Path(row["file"]).name: row["class"] for row in csv.DictReader(open(tmp_path / "check" / "images.csv"))}
    assert "circle_1.png" not in images and images["square_2.png"] == "circle"


# ---- held from round 1: the review page listens on loopback, serves the queue's images by index only, escapes ----


def test_the_review_page_listens_on_loopback_only(review):
    url, _, _ = review
    port = int(url.rsplit(":", 1)[1])
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port]
    assert listening == [f"0100007F:{port:04X}"]  # 127.0.0.1, nothing on other addresses (nor on IPv6)
    assert not any(int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "0A"
                   for line in Path("/proc/net/tcp6").read_text().splitlines()[1:])


@pytest.mark.parametrize("path", ["/image/../../../../etc/passwd", "/image/..%2f..%2f..%2fetc%2fpasswd",
                                  "/image/%2e%2e/%2e%2e/etc/passwd", "/image/-1", "/image/100000",
                                  "/etc/passwd", "/image//etc/passwd", "/static/../../etc/passwd"])
def test_images_are_served_by_index_only(review, path: str):
    url, _, _ = review
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:  # the path sent as it is written
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404") and b"root:" not in answer, answer[:200]
    with urllib.request.urlopen(url + "/image/0", timeout=60) as response:  # the queue's own image
        assert response.headers["Content-Type"] == "image/jpeg"


def test_the_review_page_escapes_names():
    from vistrain.core.html import render

    hostile = "<img src=x onerror=alert(1)>"
    item = {"index": 0, "name": hostile, "path": hostile, "given": hostile, "suggested": hostile, "kind": "duplicate",
            "score": 1.0, "detail": hostile, "split": "train", "decision": {"action": "relabel", "label": hostile}}
    page = render("review.html.j2", source=hostile, task="binary", classes=[hostile, "b"], decisions_file=hostile,
                  items=[item], actions=["keep"])
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
