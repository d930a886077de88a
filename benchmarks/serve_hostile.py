"""Benchmark: `vistrain serve` (default limits) under hostile uploads, in a child process on a free loopback port.

Scenarios, one after another: (1) `--bombs` concurrent uploads of the issue's decompression bomb (a 280 kB PNG of
9,400 x 9,400 RGB pixels, just under Pillow's limit), each on its own connection, while one client posts a real photo
every half second; (2) one chunked upload (no Content-Length) streaming `--chunked-mb` MB, generated as it is sent;
(3) one upload declaring a Content-Length of as many bytes; (4) one request with one file more than --max-files.
Prints a Markdown table: status codes, wall time, the server's peak RSS during the scenario (VmHWM, reset before
each scenario through /proc/PID/clear_refs) and a note: for the large bodies, how much was sent before the answer
came. Without --run, first trains a model on cats-vs-dogs.

    python benchmarks/serve_hostile.py [--run RUN] [--bombs 50] [--chunked-mb 300]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import itertools
import json
import os
import re
import select
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from PIL import Image

from serve_load import SHARED, free_port, multipart, start_server, trained, wait_until_healthy

TARGET_RSS = 2_000_000_000  # the target: the server's peak RSS under the flood of bombs, bytes
CLEAR = {200, 413, 415, 429, 503}  # the answers the issue accepts for a valid request


class Memory:
    """The peak RSS of process `pid` while the block runs: its VmHWM, reset on entering."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0

    def read(self, field: str) -> int:
        """`field` of /proc/PID/status (VmRSS: now, VmHWM: the peak since the last reset), in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) * 1024

    def __enter__(self) -> "Memory":
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        return self

    def __exit__(self, *_) -> None:
        self.peak = self.read("VmHWM")


def post(port: int, files: list[tuple[str, bytes]]) -> tuple[int, str]:
    """(status, error or "") of one POST /predict of `files` on a new connection; status 0 when no answer came."""
    body, content_type = multipart(files)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    try:
        connection.request("POST", "/predict", body, {"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, json.loads(response.read()).get("error", "")
    except (OSError, http.client.HTTPException, ValueError) as error:
        return 0, repr(error)
    finally:
        connection.close()


def flood(port: int, bomb: bytes, bombs: int,
          photos: list[tuple[str, bytes]]) -> tuple[collections.Counter, collections.Counter]:
    """Status counts of `bombs` concurrent bomb uploads, and of the photos posted every 0.5 s meanwhile."""
    bomb_answers: list[tuple[int, str]] = []  # list.append is atomic across threads
    photo_answers: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: bomb_answers.append(post(port, [("bomb.png", bomb)])))
               for _ in range(bombs)]
    for thread in threads:
        thread.start()
    i = 0
    while any(thread.is_alive() for thread in threads):
        photo_answers.append(post(port, [photos[i % len(photos)]]))
        i += 1
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    for status, error in sorted(dict(bomb_answers + photo_answers).items()):
        print(f"  {status}: {error[:120]}", file=sys.stderr)
    return (collections.Counter(status for status, _ in bomb_answers),
            collections.Counter(status for status, _ in photo_answers))


def stream(port: int, size: int, chunked: bool) -> tuple[int, int]:
    """(status, bytes sent before the answer) of one upload of a file of `size` zero bytes, generated as it is sent,
    chunked or with its length declared; status 0 when the connection closed without an answer."""
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + size + len(tail)}"
    piece = bytes(65536)
    pieces = itertools.chain([head], (piece[:size - start] for start in range(0, size, len(piece))), [tail])
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(f"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
                           f"boundary={boundary}\r\n{framing}\r\n\r\n".encode())
        sent = 0
        for data in itertools.chain(pieces, [b""] if chunked else []):  # chunked: b"" is the last chunk
            if select.select([connection], [], [], 0)[0]:
                break
            try:
                connection.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            except OSError:
                break
            sent += len(data)
        try:
            answer = connection.recv(65536)
        except OSError:
            answer = b""
    return (int(answer.split()[1]) if answer else 0), sent


def row(scenario: str, statuses: str, seconds: float, memory: Memory, note: str = "") -> str:
    return f"| {scenario} | {statuses} | {seconds:.1f} | {memory.peak / 2**20:,.0f} | {note} |"


def counts(statuses: collections.Counter) -> str:
    return ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="A trained run [default: train one on cats-vs-dogs first].")
    parser.add_argument("--bombs", type=int, default=50, help="Concurrent bomb uploads.")
    parser.add_argument("--chunked-mb", type=int, default=300, help="Size of the oversized uploads, MB.")
    parser.add_argument("--epochs", type=int, default=5, help="Training epochs when there is no --run.")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not on this machine")
    photos = [(p.name, p.read_bytes()) for p in sorted((SHARED / "val").glob("*/*.jpg"))[::50]]
    buffer = io.BytesIO()
    Image.new("RGB", (9400, 9400), (40, 120, 200)).save(buffer, format="PNG")
    bomb = buffer.getvalue()
    with tempfile.TemporaryDirectory() as scratch:
        run = trained(args.run, scratch, args.epochs)
        port = free_port()
        server = start_server(run, port)
        try:
            limits = wait_until_healthy(port, server)["limits"]
            post(port, photos[:1])  # warm up
            print(f"bomb: {len(bomb) / 1000:.0f} kB PNG, 9400 x 9400 RGB; limits: {limits}; {os.cpu_count()} "
                  f"CPU(s); server RSS after one photo: {Memory(server.pid).read('VmRSS') / 2**20:,.0f} MiB\n")
            print("| scenario | status codes | wall time (s) | peak server RSS (MiB) | note |")
            print("|---|---|---|---|---|")
            with Memory(server.pid) as flooded:
                started = time.perf_counter()
                bomb_statuses, photo_statuses = flood(port, bomb, args.bombs, photos)
                seconds = time.perf_counter() - started
            print(row(f"{args.bombs} concurrent bomb uploads", counts(bomb_statuses), seconds, flooded))
            print(f"| a photo every 0.5 s meanwhile | {counts(photo_statuses)} | | | |", flush=True)
            size = args.chunked_mb * 1_000_000
            for chunked, name in ((True, "chunked, no Content-Length"), (False, "Content-Length")):
                with Memory(server.pid) as memory:
                    started = time.perf_counter()
                    status, sent = stream(port, size, chunked)
                    seconds = time.perf_counter() - started
                print(row(f"{args.chunked_mb} MB upload, {name}", f"1 x {status}", seconds, memory,
                          f"{sent / 1e6:.1f} MB sent before the answer"), flush=True)
            files = [photos[i % len(photos)] for i in range(limits["max_files"] + 1)]
            with Memory(server.pid) as memory:
                started = time.perf_counter()
                status, error = post(port, files)
                seconds = time.perf_counter() - started
            print(row(f"{len(files)} photos in one request", f"1 x {status}", seconds, memory, f"answer: {error}"))
            answers = set(bomb_statuses) | set(photo_statuses)
            met = flooded.peak < TARGET_RSS and answers <= CLEAR
            print(f"\ntarget (peak RSS under the flood < {TARGET_RSS / 1e9:.0f} GB, answers only {sorted(CLEAR)}): "
                  f"{'met' if met else 'MISSED'} ({flooded.peak / 1e9:.2f} GB, answers {sorted(answers)})")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
