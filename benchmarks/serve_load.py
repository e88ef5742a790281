"""Load test of ``kangae serve``: latency and answers of /api/predict under concurrent requests.

Starts ``kangae serve`` as its own process on a free local port (for ``--run``, a run or tour
folder, or else a tiny MLP trained here for one epoch on a slice of MNIST, or on synthetic
digits when MNIST is absent), sends ``--requests`` ``POST /api/predict`` from ``--concurrency``
clients with a 280x280 canvas PNG (what the page sends; the server does the MNIST-style
preprocessing) and then with a 28x28 array. For each it prints p50, p95 and max latency, every
HTTP status it got, timeouts and connection errors apart, requests and 200s per second and
the CPU per request of server and client; then the same with micro-batching off
(``--max-batch 1``) as the reference, and the ratio.

Goals (issue 18), on 2 cores with the client on the same machine: at concurrency 8, 0 errors
and p95 <= 50 ms; above it, every request answered 200 or 503 within 2 s, none dropped or timed
out, and at least 290 answers 200 a second (2x the 145 req/s measured before micro-batching).

The client speaks HTTP/1.1 through h11 on asyncio streams, one kept-alive connection per
concurrent client: httpx's AsyncClient spends 5-8 ms of CPU a request with 256 connections in
its pool (``--client httpx`` to see it), which on 2 shared cores starved the server it measured.

Usage: KANGAE_DATA=../shared/datasets python benchmarks/serve_load.py [--run RUN] [--requests 500]
       [--concurrency 8] [--client h11|httpx] [--no-reference]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httpx
import numpy as np
from PIL import Image, ImageDraw


def tiny_run(folder: Path) -> Path:
    """A one-epoch MLP: on 6000 MNIST images when present, else on synthetic strokes."""
    import kangae
    from kangae.data import write_idx
    from kangae.data.registry import DATASETS
    from kangae.data.store import find_local

    out = folder / "tiny-mlp"
    if find_local(DATASETS["mnist"], None) is None:
        rng = np.random.default_rng(0)
        root = folder / "data"
        (root / "mnist").mkdir(parents=True)
        for split, n in (("train", 2000), ("t10k", 500)):
            labels = (np.arange(n) % 10).astype(np.uint8)
            images = np.stack([np.asarray(_digit_like(int(k), rng).resize((28, 28))) for k in labels])
            write_idx(root / "mnist" / f"{split}-images-idx3-ubyte.gz", (255 - images).astype(np.uint8))
            write_idx(root / "mnist" / f"{split}-labels-idx1-ubyte.gz", labels)
        os.environ["KANGAE_DATA"] = str(root)
        print("(MNIST not found: training on synthetic strokes)")
    kangae.train("mlp", out=out, epochs=1, limit=6000, progress=False, tensorboard=False, snapshots=False)
    return out


def _digit_like(k: int, rng: np.random.Generator, size: int = 280) -> Image.Image:
    """A canvas like the page's: black strokes on white, a different polyline per class."""
    img = Image.new("L", (size, size), 255)
    angle = np.linspace(0, 2 * np.pi * (0.3 + 0.07 * k), 6 + k % 4) + rng.uniform(0, 0.5)
    radius = size * (0.2 + 0.02 * (k % 5))
    pts = [(size / 2 + radius * np.cos(a) * (1 + 0.1 * (k % 3)), size / 2 + radius * np.sin(a * (1 + k / 10)))
           for a in angle]
    ImageDraw.Draw(img).line(pts, fill=0, width=int(size / 14), joint="curve")
    return img


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TIMEOUT_S = 10.0  # a request unanswered this long counts as timed out (the server's own limit is 2 s)
GOAL_P95_MS, GOAL_WAIT_MS, GOAL_OK_PER_S = 50.0, 2000.0, 290.0


@dataclass
class Outcome:
    """What ``n`` requests got: latencies (ms) and a count per HTTP status, or per failure."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    timeouts: int = 0
    connection_errors: int = 0
    bad_answers: int = 0  # a 200 without probabilities
    wall: float = 0.0

    def add(self, ms: float, status: int | str) -> None:
        self.latencies.append(ms)
        if status == "timeout":
            self.timeouts += 1
        elif status == "connection":
            self.connection_errors += 1
        elif status == "bad answer":
            self.bad_answers += 1
        else:
            self.statuses[status] += 1

    @property
    def n(self) -> int:
        return len(self.latencies)

    def describe(self) -> str:
        codes = "  ".join(f"{code}: {k}" for code, k in sorted(self.statuses.items()))
        return (f"{codes}  timeouts {self.timeouts}  connection errors {self.connection_errors}"
                + (f"  bad answers {self.bad_answers}" if self.bad_answers else ""))

    def goal(self, concurrency: int) -> str:
        p95, worst = np.percentile(self.latencies, 95), max(self.latencies)
        if concurrency <= 8:
            met = self.statuses[200] == self.n and p95 <= GOAL_P95_MS
            return f"goal: all 200, p95 <= {GOAL_P95_MS:.0f} ms: {'met' if met else 'MISSED'}"
        answered = self.statuses[200] + self.statuses[503] == self.n
        met = answered and worst <= GOAL_WAIT_MS and self.statuses[200] / self.wall >= GOAL_OK_PER_S
        return (f"goal: all 200 or 503 within {GOAL_WAIT_MS / 1000:.0f} s, >= {GOAL_OK_PER_S:.0f} 200s/s: "
                f"{'met' if met else 'MISSED'}")


def _check(status: int, body: bytes) -> int | str:
    if status != 200:
        return status
    try:
        return 200 if len(json.loads(body)["probabilities"]) > 0 else "bad answer"
    except (ValueError, KeyError, TypeError):
        return "bad answer"


async def _h11_clients(host: str, port: int, bodies: list[bytes], n: int, concurrency: int,
                       out: Outcome) -> None:
    """``concurrency`` clients, each on its own kept-alive connection, sending until ``n`` are sent."""
    queue = iter(range(n))
    head = [("host", f"{host}:{port}"), ("content-type", "application/json")]

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: h11.Connection,
                       body: bytes) -> tuple[int, bytes]:
        writer.write(conn.send(h11.Request(method="POST", target="/api/predict",
                                           headers=[*head, ("content-length", str(len(body)))]))
                     + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data and conn.their_state is not h11.DONE:
                    raise ConnectionError("the server closed the connection")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, b"".join(chunks)

    async def client() -> None:
        reader = writer = conn = None
        for i in queue:
            t0 = time.perf_counter()
            try:
                if conn is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT_S)
                    conn = h11.Connection(h11.CLIENT)
                left = TIMEOUT_S - (time.perf_counter() - t0)
                status, body = await asyncio.wait_for(exchange(reader, writer, conn, bodies[i % len(bodies)]),
                                                      left)
                result = _check(status, body)
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:  # the server closes after this answer: a new connection next time
                    writer.close()
                    conn = None
            except TimeoutError:
                result = "timeout"
            except (OSError, h11.ProtocolError):
                result = "connection"
            if result in ("timeout", "connection") and writer is not None:
                writer.close()
                conn = None
            out.add((time.perf_counter() - t0) * 1000, result)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _httpx_clients(host: str, port: int, bodies: list[bytes], n: int, concurrency: int,
                         out: Outcome) -> None:
    """The first version's client: one httpx.AsyncClient whose pool holds every connection."""
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    url = f"http://{host}:{port}/api/predict"
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:

        async def worker() -> None:
            for i in queue:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[i % len(bodies)],
                                          headers={"content-type": "application/json"})
                    result = _check(r.status_code, r.content)
                except httpx.TimeoutException:
                    result = "timeout"
                except httpx.HTTPError:
                    result = "connection"
                out.add((time.perf_counter() - t0) * 1000, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def load(port: int, bodies: list[bytes], n: int, concurrency: int, client: str = "h11") -> Outcome:
    out = Outcome()
    clients = _h11_clients if client == "h11" else _httpx_clients
    t0 = time.perf_counter()
    asyncio.run(clients("127.0.0.1", port, bodies, n, concurrency, out))
    out.wall = time.perf_counter() - t0
    return out


class Server:
    """``kangae serve RUN`` in its own process on a free port, ready (prototypes done) on entry."""

    def __init__(self, run: Path, workers: int, extra: list[str]):
        self.port = _free_port()
        src = Path(__file__).resolve().parents[1] / "src"
        path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "kangae.cli", "serve", str(run), "--port",
                                      str(self.port), "--workers", str(workers), *extra],
                                     env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> dict:
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    info = httpx.get(base + "/api/info", timeout=2).json()
                    break
                except httpx.TransportError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = self.proc.stdout.read() or ""
                        raise SystemExit("server did not start:\n" + log) from None
                    time.sleep(0.2)
            while not httpx.get(base + "/api/ideas", timeout=10).json()["ready"]:  # prototypes at start
                if time.monotonic() > deadline + 240:
                    raise SystemExit("the server's prototypes took over 5 minutes")
                time.sleep(0.5)
        except BaseException:
            self.__exit__()
            raise
        return info

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(server: Server, bodies: list[bytes], args: argparse.Namespace) -> tuple[Outcome, float, float]:
    """(outcome, server CPU ms a request, client CPU ms a request), after a warm-up."""
    load(server.port, bodies, 40, min(args.concurrency, 8), args.client)
    cpu0, client0 = cpu_seconds(server.proc.pid), time.process_time()
    out = load(server.port, bodies, args.requests, args.concurrency, args.client)
    cpu = (cpu_seconds(server.proc.pid) - cpu0) / args.requests * 1000
    return out, cpu, (time.process_time() - client0) / args.requests * 1000


def line(name: str, out: Outcome, cpu: float, client: float) -> str:
    p50, p95 = np.percentile(out.latencies, [50, 95])
    return (f"  {name:<26} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {max(out.latencies):6.1f} ms  "
            f"{out.n / out.wall:5.0f} req/s, {out.statuses[200] / out.wall:5.0f} 200s/s  {out.describe()}  "
            f"CPU/request: server {cpu:4.1f} ms, client {client:4.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="run or tour folder to serve (default: train a tiny MLP)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="model threads of the server")
    ap.add_argument("--client", choices=["h11", "httpx"], default="h11")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the run with micro-batching off (e.g. against a server without --max-batch)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    try:
        run = Path(args.run) if args.run else tiny_run(Path(tmp.name))
        rng = np.random.default_rng(1)
        arrays = [rng.uniform(0, 1, (28, 28)).round(3).tolist() for _ in range(20)]
        inputs = {"canvas PNG": [{"image": _png_b64(_digit_like(k % 10, rng))} for k in range(20)],
                  "28x28 array": [{"image": a} for a in arrays]}
        bodies = {name: [json.dumps(b).encode() for b in values] for name, values in inputs.items()}
        setups = [("default", [])] + ([] if args.no_reference else [("--max-batch 1", ["--max-batch", "1"])])
        results: dict[tuple[str, str], Outcome] = {}
        for setup, extra in setups:
            server = Server(run, args.workers, extra)
            with server as info:
                if setup == "default":
                    print(f"kangae serve load test: {info['model']} ({run}), {args.requests} POST "
                          f"/api/predict at concurrency {args.concurrency} ({args.client} client); server: "
                          f"{args.workers} model threads, {os.cpu_count()} CPUs (shared with other work: "
                          "timings are noisy)")
                for name, values in bodies.items():
                    out, cpu, client = measure(server, values, args)
                    results[setup, name] = out
                    tail = f"  [{out.goal(args.concurrency)}]" if setup == "default" else ""
                    print(line(f"{name}, {setup}", out, cpu, client) + tail, flush=True)
        if not args.no_reference:
            for name in bodies:
                new, ref = results["default", name], results["--max-batch 1", name]
                ratio = (new.statuses[200] / new.wall) / max(ref.statuses[200] / ref.wall, 1e-9)
                print(f"  {name:<26} micro-batching: {ratio:.2f}x the 200s a second of --max-batch 1")
    finally:
        tmp.cleanup()


if __name__ == "__main__":
    main()
