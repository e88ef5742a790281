"""Load test of ``kangae serve``: latency of /api/predict under concurrent requests.

Starts ``kangae serve`` as its own process on a free local port (for ``--run``, a run or tour
folder, or else a tiny MLP trained here for one epoch on a slice of MNIST, or on synthetic
digits when MNIST is absent), sends 500 ``POST /api/predict`` at concurrency 8 with a 280x280
canvas PNG (what the page sends; the server does the MNIST-style preprocessing) and then with a
28x28 array, and prints p50 and p95 latency, the error count and the throughput.
Goal (issue 9): 0 errors and p95 <= 50 ms on 2 cores.

Usage: KANGAE_DATA=../shared/datasets python benchmarks/serve_load.py [--run RUN] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


async def load(url: str, bodies: list[dict], n: int, concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for i in queue:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=bodies[i % len(bodies)])
                    ok = r.status_code == 200 and len(r.json()["probabilities"]) > 0
                except (httpx.HTTPError, ValueError, KeyError):
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="run or tour folder to serve (default: train a tiny MLP)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="model threads of the server")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    run = Path(args.run) if args.run else tiny_run(Path(tmp.name))
    port = _free_port()
    src = Path(__file__).resolve().parents[1] / "src"
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    server = subprocess.Popen([sys.executable, "-m", "kangae.cli", "serve", str(run), "--port", str(port),
                               "--workers", str(args.workers)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = httpx.get(base + "/api/info", timeout=2).json()
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start:\n" + (server.stdout.read() or "")) from None
                time.sleep(0.2)
        while not httpx.get(base + "/api/ideas", timeout=10).json()["ready"]:  # prototypes at start
            if time.monotonic() > deadline + 240:
                raise SystemExit("the server's prototypes took over 5 minutes")
            time.sleep(0.5)
        rng = np.random.default_rng(1)
        pngs = [{"image": _png_b64(_digit_like(k % 10, rng))} for k in range(20)]
        arrays = [{"image": rng.uniform(0, 1, (28, 28)).round(3).tolist()} for _ in range(20)]
        print(f"kangae serve load test: {info['model']} ({run}), {args.requests} POST /api/predict at "
              f"concurrency {args.concurrency}; server: {args.workers} model threads, "
              f"{os.cpu_count()} CPUs (shared with other work: timings are noisy)")
        for name, bodies in (("canvas PNG", pngs), ("28x28 array", arrays)):
            asyncio.run(load(base + "/api/predict", bodies, 40, args.concurrency))  # warm-up
            cpu0, client0 = cpu_seconds(server.pid), time.process_time()
            lat, errors, wall = asyncio.run(load(base + "/api/predict", bodies, args.requests,
                                                 args.concurrency))
            cpu = (cpu_seconds(server.pid) - cpu0) / args.requests * 1000
            client = (time.process_time() - client0) / args.requests * 1000
            p50, p95 = np.percentile(lat, [50, 95])
            ok = "met" if errors == 0 and p95 <= 50 else "MISSED"
            print(f"  {name:<12} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {max(lat):6.1f} ms  "
                  f"errors {errors}  {args.requests / wall:5.0f} req/s  CPU/request: server {cpu:4.1f} ms, "
                  f"client {client:4.1f} ms  [goal: 0 errors, p95 <= 50 ms: {ok}]")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        tmp.cleanup()


if __name__ == "__main__":
    main()
