"""``kangae serve``: run and tour folders, clear errors for anything else, and a real start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import kangae
from kangae.cli import cli
from kangae.errors import KangaeError
from kangae.serve import app_for


def _tour(tmp_path: Path, serve_run: Path, **extra) -> Path:
    tour = tmp_path / "tour"
    tour.mkdir(exist_ok=True)
    (tour / "tour.json").write_text(json.dumps({"serve_run": os.path.relpath(serve_run, tour), **extra}))
    return tour


def test_unknown_folders_exit_2_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "tour.json").write_text("{not json")
    cases = [(tmp_path / "missing", "no such run folder"),
             (tmp_path / "empty", "neither a kangae run folder"), (bad_json, "not valid JSON")]
    for folder, message in cases:
        r = CliRunner().invoke(cli, ["serve", str(folder), "--port", "0"])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and message in r.output and "Traceback" not in r.output


def test_tour_folder_errors(tmp_path: Path, serve_run: Path) -> None:
    tour = tmp_path / "t"
    tour.mkdir()
    for body, message in [({"other": 1}, "no 'serve_run'"), ({"serve_run": "/abs/run"}, "must be relative"),
                          ({"serve_run": "nowhere"}, "no such run folder")]:
        (tour / "tour.json").write_text(json.dumps(body))
        with pytest.raises(KangaeError, match=message):
            app_for(tour)
    save_file({"images": torch.rand(3, 1, 28, 28)}, tmp_path / "p.safetensors")
    save_file({"pixels": torch.rand(10, 1, 28, 28)}, tmp_path / "q.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04 not safetensors")
    cases = [("p.safetensors", r"shape \[3, 1, 28, 28\]"), ("q.safetensors", "no 'images'"),
             ("junk.safetensors", "not a readable safetensors"), ("none.safetensors", "no such")]
    for name, message in cases:
        tour = _tour(tmp_path, serve_run, prototypes=os.path.relpath(tmp_path / name, tmp_path / "tour"))
        with pytest.raises(KangaeError, match=message):
            app_for(tour)


def test_tour_folder_with_prototypes(tmp_path: Path, serve_run: Path) -> None:
    from fastapi.testclient import TestClient

    protos = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    save_file({"images": protos}, tmp_path / "tour-protos.safetensors")
    tour = _tour(tmp_path, serve_run, prototypes="../tour-protos.safetensors")
    with TestClient(app_for(tour)) as client:
        out = client.get("/api/ideas").json()  # no search: ready at once
        assert out["ready"] and out["method"] == "precomputed: tour-protos.safetensors"
        assert torch.allclose(torch.tensor(out["images"]), protos[:, 0], atol=1e-3)
        info = client.get("/api/info").json()
        assert info["run"] == serve_run.name
        assert info["accuracy"] == kangae.load(serve_run).meta.metrics["val_acc"]  # was null


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_on_localhost(serve_run: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "kangae.cli", "serve", str(serve_run), "--port", str(port),
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "server did not start in 40 s"
                time.sleep(0.2)
        assert info["model"] == "mlp" and info["classes"] == [str(i) for i in range(10)]
        r = httpx.post(f"http://127.0.0.1:{port}/api/predict", json={"image": [[0.0] * 28] * 28}, timeout=10)
        assert r.status_code == 200 and len(r.json()["probabilities"]) == 10
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"host": f"rebound.example:{port}"})
        assert r.status_code == 400  # bound to 127.0.0.1: other host names are refused
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in out
    assert proc.returncode == 0, out


def test_unknown_explain_method_exits_2(serve_run: Path) -> None:
    r = CliRunner().invoke(cli, ["serve", str(serve_run), "--explain", "salincy", "--ideas", "greedy"])
    assert r.exit_code == 2 and "unknown explanation method 'salincy'" in r.output
    assert "Did you mean 'saliency'" in r.output


def test_a_taken_port_exits_2(serve_run: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(cli, ["serve", str(serve_run), "--port", str(port)])
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.output


def test_the_listening_socket_sends_small_writes_at_once():
    """Without TCP_NODELAY a keep-alive response waits 40 ms for the client's delayed ACK."""
    import socket

    from kangae.cli.serve import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


def test_batch_and_queue_options_reach_the_engine(tmp_path: Path, serve_run: Path, monkeypatch) -> None:
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config.app))
    save_file({"images": torch.rand(10, 1, 28, 28)}, tmp_path / "p.safetensors")
    tour = _tour(tmp_path, serve_run, prototypes="../p.safetensors")  # prototypes ready: a clean exit
    r = CliRunner().invoke(cli, ["serve", str(tour), "--port", "0", "--max-batch", "8", "--queue", "32"])
    assert r.exit_code == 0, r.output
    engine = served[0].state.engine
    engine.close()
    assert engine.batcher.max_batch == 8 and engine.max_pending == 32
    for bad in (["--max-batch", "0"], ["--queue", "0"]):
        r = CliRunner().invoke(cli, ["serve", str(tour), "--port", "0", *bad])
        assert r.exit_code == 2 and "Invalid value" in r.output


def _served(monkeypatch, args: list[str]):
    """``kangae serve ARGS`` up to the point it would serve: (result, its app or None)."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config.app))
    r = CliRunner().invoke(cli, ["serve", *args, "--port", "0"])
    if served:
        served[0].state.engine.close()
    return r, served[0] if served else None


def test_any_model_spec_gets_the_picture_engine(monkeypatch, colour_spec) -> None:
    from kangae.serve.picture_engine import PictureEngine

    spec = [colour_spec["spec"], "--weights", colour_spec["weights"], "--card", colour_spec["card"]]
    r, app = _served(monkeypatch, [*spec, "--mask-steps", "7", "--proto-steps", "5", "--explain", "saliency"])
    assert r.exit_code == 0, r.output
    engine = app.state.engine
    assert isinstance(engine, PictureEngine) and engine.mask_steps == 7 and engine.prototypes.steps == 5
    assert engine.explain_method == "saliency" and engine.classes[1] == "red"
    r, _ = _served(monkeypatch, [*spec, "--explain", "rise"])
    assert r.exit_code == 2 and "the picture page serves gradcam, mask" in r.output


def test_weights_and_card_are_refused_for_run_and_tour_folders(monkeypatch, serve_run, colour_spec) -> None:
    r, _ = _served(monkeypatch, [str(serve_run), "--weights", colour_spec["weights"]])
    assert r.exit_code == 2 and "carries its own weights and card" in r.output and "Traceback" not in r.output


def test_the_card_decides_the_page(tmp_path: Path) -> None:
    """A zoo digit model with an 'mnist' card gets the drawing page; without a card it is a
    28x28 grey picture model, and gets the picture page with a grey crop."""
    import base64
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from kangae.serve.engine import Engine
    from kangae.serve.picture_engine import PictureEngine

    card = {"preprocess": "mnist", "classes": [str(i) for i in range(10)]}
    (tmp_path / "card.json").write_text(json.dumps(card))
    app = app_for("softmax", card=tmp_path / "card.json", ideas_method="gradient",
                  allowed_hosts=["testserver"])
    engine = app.state.engine
    assert type(engine) is Engine
    with TestClient(app) as client:
        assert client.get("/api/info").json()["mode"] == "digits" and 'id="pad"' in client.get("/").text
    app = app_for("softmax", allowed_hosts=["testserver"])
    assert isinstance(app.state.engine, PictureEngine)
    buf = io.BytesIO()
    Image.new("RGB", (56, 40), (200, 100, 50)).save(buf, format="PNG")
    with TestClient(app) as client:
        out = client.post("/api/predict", json={"image": base64.b64encode(buf.getvalue()).decode()}).json()
    crop = Image.open(io.BytesIO(base64.b64decode(out["crop"].split(",", 1)[1])))
    assert crop.mode == "L" and crop.size == (28, 28) and len(out["top"]) == 5
    assert np.asarray(crop).std() == 0  # a flat colour stays flat
