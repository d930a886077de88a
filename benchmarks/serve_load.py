"""Benchmark: `vistrain serve` under load from N concurrent clients posting real photos (cats-vs-dogs val).

Starts the server in a child process on a free loopback port; each client thread posts one photo per request on
its own keep-alive connection for a fixed time. Prints a Markdown table: requests/s, p50 and p99 latency, errors
(any answer but 200 counts; every photo is valid). Without --run, first trains a model on cats-vs-dogs.

    python benchmarks/serve_load.py [--run RUN] [--clients 1,4,16] [--seconds 15]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with `files` (name, content) under `files`, and its content type."""
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                    f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def client(port: int, photos: list[tuple[str, bytes]], start: int, until: float, latencies: list[float],
           errors: list[str]) -> None:
    """Post photos one after another until `until`, recording each request's latency or its error."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = start
    while time.perf_counter() < until:
        body, content_type = multipart([photos[i % len(photos)]])
        started = time.perf_counter()
        try:
            connection.request("POST", "/predict", body, {"Content-Type": content_type})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                errors.append(f"{response.status}: {answer[:200]!r}")
            else:
                latencies.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i += 1
    connection.close()


def load(port: int, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> str:
    """One Markdown table row for `clients` concurrent clients."""
    latencies: list[float] = []
    errors: list[str] = []
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(port, photos, 97 * c, until, latencies, errors))
               for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for error in errors[:3]:
        print(f"  error: {error}", file=sys.stderr)
    ordered = sorted(latencies) or [float("nan")]
    p50, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 for q in (0.5, 0.99))
    return f"| {clients} | {len(latencies)} | {len(latencies) / elapsed:.1f} | {p50:.0f} | {p99:.0f} | {len(errors)} |"


def wait_until_healthy(port: int, server: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            return json.loads(connection.getresponse().read())
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not start")


def trained(run: Path | None, scratch: str, epochs: int) -> Path:
    """`run`, or when None a run trained on cats-vs-dogs for `epochs` epochs under `scratch`."""
    if run is not None:
        return run
    from vistrain.api import train
    from vistrain.training.options import TrainOptions

    run = Path(scratch) / "run"
    started = time.perf_counter()
    train(SHARED, out=run, options=TrainOptions(epochs=epochs))
    print(f"trained {run} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return run


def start_server(run: Path, port: int, *options: str) -> subprocess.Popen:
    """`vistrain serve RUN --port PORT OPTIONS...` in a child process, its output thrown away."""
    return subprocess.Popen([sys.executable, "-m", "vistrain", "serve", str(run), "--port", str(port), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="A trained run [default: train one on cats-vs-dogs first].")
    parser.add_argument("--clients", default="1,4,16", help="Comma-separated numbers of concurrent clients.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Load time per number of clients.")
    parser.add_argument("--epochs", type=int, default=5, help="Training epochs when there is no --run.")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not on this machine")
    photos = [(p.name, p.read_bytes()) for p in sorted((SHARED / "val").glob("*/*.jpg"))]
    with tempfile.TemporaryDirectory() as scratch:
        run = trained(args.run, scratch, args.epochs)
        port = free_port()
        server = start_server(run, port)
        try:
            health = wait_until_healthy(port, server)
            print(f"{health['backbone']['name']} {health['task']} {health['classes']}; {len(photos)} photos "
                  f"({sum(len(d) for _, d in photos) / len(photos) / 1000:.0f} kB on average); "
                  f"{args.seconds:.0f} s per row; {os.cpu_count()} CPU(s)\n")
            print("| clients | requests | requests/s | p50 latency (ms) | p99 latency (ms) | errors |")
            print("|---|---|---|---|---|---|")
            for clients in (int(c) for c in args.clients.split(",")):
                print(load(port, photos, clients, args.seconds), flush=True)
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
