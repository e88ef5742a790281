"""The JSON API: known answers for good input, a 4xx JSON error for every kind of junk."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kangae.data.preprocess import preprocess
from kangae.serve.limits import BodyLimit

from .conftest import drawing, png_b64


def _model(app):
    return app.state.engine.model


def test_page_is_self_contained(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for needle in ('id="pad"', 'id="clear"', 'id="bars"', 'id="seen"', 'id="mask"', 'id="intended"',
                   'id="fix"'):
        assert needle in page.text
    assert "http://" not in page.text.replace('href="/docs"', "") and "https://" not in page.text
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "https://" not in r.text and "http://" not in r.text
    for bad in ("/static/app.py", "/static/..%2Fapp.py", "/static/%2e%2e%2f__init__.py", "/static/"):
        assert client.get(bad).status_code == 404


def test_docs_and_openapi(client) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/explain", "/api/ideas", "/api/fix"} <= set(paths)


def test_predict_png_is_preprocessed_like_a_file(app, client) -> None:
    img = drawing()
    r = client.post("/api/predict", json={"image": png_b64(img)})
    assert r.status_code == 200, r.text
    out = r.json()
    want = preprocess(img).image
    seen = torch.tensor(out["seen"])
    assert seen.shape == (28, 28) and torch.allclose(seen, want[0], atol=1e-3)
    assert out["input"] == "png" and out["inverted"] is True
    probs = torch.softmax(_model(app)(want[None]), 1)[0]
    assert np.allclose(out["probabilities"], probs.tolist(), atol=1e-4)
    assert out["predicted"] == int(probs.argmax()) and abs(sum(out["probabilities"]) - 1) < 1e-3
    bare = client.post("/api/predict", json={"image": png_b64(img, data_url=False)}).json()
    assert bare["probabilities"] == out["probabilities"]


def test_predict_array_known_answers(client, blob_images) -> None:
    images, labels = blob_images
    right = 0
    for img, label in zip(images[:20], labels[:20]):
        out = client.post("/api/predict", json={"image": (img / 255.0).tolist()}).json()
        assert out["input"] == "array"
        assert np.allclose(out["seen"], img / 255.0, atol=1e-3)
        right += out["predicted"] == int(label)
    assert right >= 18  # the blobs are easy: the run is ~100% accurate on them


@pytest.mark.parametrize("image, message", [
    ("!!!not base64!!!", "not valid base64"),
    (base64.b64encode(b"hello, I am not a PNG").decode(), "not a readable PNG"),
    ("", "empty"),
    ([[0.0] * 27] * 28, "shape [28, 27]"),
    ([[0.0] * 28] * 3, "shape [3, 28]"),
    ([[0.0] * 28, [0.0]], "28x28 grid"),
    ([["a"] * 28] * 28, "28x28 grid"),
    ([[2.0] * 28] * 28, "in [0, 1]"),
    ([[-0.5] * 28] * 28, "in [0, 1]"),
])
def test_junk_images_get_400(client, image, message: str) -> None:
    for path in ("/api/predict", "/api/explain"):
        r = client.post(path, json={"image": image})
        assert r.status_code == 400, (path, r.text)
        assert message in r.json()["error"]


def test_nan_and_infinity_get_400(client) -> None:
    grid = [[0.0] * 28 for _ in range(28)]
    for token in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps({"image": grid}).replace("0.0", token, 1)
        r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "NaN or infinite" in r.json()["error"]


def test_blank_drawing_gets_400(client) -> None:
    for color in ("white", "black"):
        r = client.post("/api/predict", json={"image": png_b64(Image.new("RGB", (280, 280), color))})
        assert r.status_code == 400 and "blank drawing" in r.json()["error"]


def test_truncated_png_and_bomb_get_400(client) -> None:
    buf = io.BytesIO()
    drawing().save(buf, format="PNG")
    cut = base64.b64encode(buf.getvalue()[:200]).decode()
    r = client.post("/api/predict", json={"image": cut})
    assert r.status_code == 400 and "not a readable PNG" in r.json()["error"]
    big = io.BytesIO()
    Image.new("1", (5000, 5000)).save(big, format="PNG")  # tiny file, 25 megapixels
    assert big.tell() < 1 << 20
    r = client.post("/api/predict", json={"image": base64.b64encode(big.getvalue()).decode()})
    assert r.status_code == 400 and "5000x5000" in r.json()["error"]


def test_schema_errors_get_422_json(client) -> None:
    cases = [({"imag": "x"}, "image"), ({"image": 3}, "image"), ({"image": None}, "image")]
    for body, word in cases:
        r = client.post("/api/predict", json=body)
        assert r.status_code == 422 and word in r.json()["error"]
    r = client.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = client.post("/api/explain", json={"image": [[0.0] * 28] * 28, "target": "seven"})
    assert r.status_code == 422
    r = client.post("/api/fix", json={"image": [[0.0] * 28] * 28, "target": 3, "max_edits": 0})
    assert r.status_code == 422


def test_bad_targets_get_400(client) -> None:
    grid = [[0.0] * 28] * 28
    for path in ("/api/explain", "/api/fix"):
        for t in (10, -1):
            r = client.post(path, json={"image": grid, "target": t})
            assert r.status_code == 400 and "target must lie in 0..9" in r.json()["error"]
    assert client.get("/api/ideas/10.png").status_code == 400


def test_body_limit_by_content_length_and_by_bytes(client) -> None:
    big = json.dumps({"image": "A" * (1 << 20)})
    r = client.post("/api/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no Content-Length: the middleware counts what arrives
        for _ in range(20):
            yield b"A" * 65536

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def _two_chunks(middleware, chunk: int, length: int | None):
    """``middleware`` called on a body of two ``chunk``-byte pieces (``Content-Length: length``
    when given): the coroutine, and the list the messages it sends go to."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"x" * chunk, "more_body": True},
                {"type": "http.request", "body": b"x" * chunk, "more_body": False}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    headers = [(b"content-length", str(length).encode())] if length is not None else []
    return middleware({"type": "http", "headers": headers}, receive, send), sent


def test_body_limit_counts_bytes_despite_a_small_content_length() -> None:
    reached = []

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        reached.append(True)

    coroutine, sent = _two_chunks(BodyLimit(app, max_bytes=1000), 600, 10)
    asyncio.run(coroutine)
    assert not reached and sent[0]["status"] == 413
    assert b"too large" in sent[1]["body"]


def test_bodies_held_at_once_are_capped_with_a_fast_503() -> None:
    """Three 400-byte bodies fit a 1,000-byte cap only two at a time: while two requests are
    being answered, the third (declared or chunked) gets 503 and Retry-After at once, and once
    they finish the cap is free again."""
    release = asyncio.Event()
    seen: list[bytes] = []

    async def app(scope, receive, send):
        seen.append((await receive())["body"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def request(limit, length: bool):
        return _two_chunks(limit, 200, 400 if length else None)

    async def burst():
        limit = BodyLimit(app, max_bytes=500, max_held=1000)
        first, second = request(limit, True), request(limit, False)
        running = [asyncio.create_task(first[0]), asyncio.create_task(second[0])]
        await asyncio.sleep(0.01)
        assert limit.held == 800 and len(seen) == 2
        for length in (True, False):  # declared up front, or found while reading
            coroutine, sent = request(limit, length)
            await asyncio.wait_for(coroutine, 1.0)  # answered without waiting for the others
            assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
            assert b"too many" in sent[1]["body"] and limit.held == 800
        release.set()
        await asyncio.gather(*running)
        assert first[1][0]["status"] == second[1][0]["status"] == 200 and limit.held == 0
        coroutine, sent = request(limit, True)
        await coroutine
        assert sent[0]["status"] == 200 and limit.held == 0

    asyncio.run(burst())


def test_only_local_host_names_are_served(client) -> None:
    assert client.get("/api/info", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/info", headers={"host": "[::1]:8000"}).status_code == 200
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:80", ""):
        r = client.post("/api/predict", json={"image": [[0.0] * 28] * 28}, headers={"host": host})
        assert r.status_code == 400 and "is not served here" in r.json()["error"]


def test_explain_auto_and_given_target(app, client, blob_images) -> None:
    images, labels = blob_images
    x = images[0] / 255.0
    out = client.post("/api/explain", json={"image": x.tolist()}).json()
    pred = client.post("/api/predict", json={"image": x.tolist()}).json()["predicted"]
    assert out["target"] == pred
    a = torch.tensor(out["attribution"])
    assert a.shape == (28, 28) and torch.isfinite(a).all() and a.abs().sum() > 0
    other = (pred + 1) % 10
    out2 = client.post("/api/explain", json={"image": x.tolist(), "target": other}).json()
    assert out2["target"] == other and out2["attribution"] != out["attribution"]
    from kangae.probes.attribution import explain

    xt = torch.tensor(x, dtype=torch.float32)[None, None]
    res = explain(_model(app), xt, torch.tensor([pred]), method=app.state.engine.explain_method)
    want = res.attribution[0, 0]
    assert out["method"] == res.method == "mask"
    assert out["summary"] == res.summary(0, [str(i) for i in range(10)])
    assert out["metrics"]["area"] == pytest.approx(float(res.area[0]), abs=1e-4)
    assert torch.allclose(a, want.float(), atol=1e-4, rtol=1e-3)
    sal = client.post("/api/explain", json={"image": x.tolist(), "method": "saliency"}).json()
    xt.requires_grad_(True)  # saliency is |d logit / d pixel|: check it with plain autograd
    _model(app)(xt)[0, pred].backward()
    assert sal["method"] == "saliency" and torch.allclose(torch.tensor(sal["attribution"]),
                                                          xt.grad.abs()[0, 0], atol=1e-4, rtol=1e-3)
    bad = client.post("/api/explain", json={"image": x.tolist(), "method": "../../etc/passwd"})
    assert bad.status_code == 400 and "unknown explanation method" in bad.json()["error"]


@pytest.mark.parametrize("points", [[(70, 60), (210, 60), (120, 240)], [(140, 30), (150, 250)],
                                    [(20, 100), (260, 120)]])
def test_explain_frame_maps_the_28x28_back_onto_the_drawing(client, points) -> None:
    img = drawing(points)
    out = client.post("/api/explain", json={"image": png_b64(img)}).json()
    x, y, w, h = out["frame"]
    ink = Image.fromarray(255 - np.asarray(img.convert("L")))  # white ink on black, like the model's
    back = ink.crop((round(x), round(y), round(x + w), round(y + h))).resize((28, 28), Image.BILINEAR)
    back = np.asarray(back, dtype=np.float64).ravel()
    seen = np.asarray(out["seen"]).ravel()
    assert np.corrcoef(back, seen)[0, 1] > 0.9  # the same digit in the same place
    shifted = np.roll(np.asarray(out["seen"]), 3, axis=1).ravel()
    assert np.corrcoef(back, shifted)[0, 1] < np.corrcoef(back, seen)[0, 1] - 0.1
    arr = client.post("/api/explain", json={"image": out["seen"]}).json()
    assert arr["frame"] is None


def test_ideas_are_prototypes_the_model_agrees_with(app, client) -> None:
    deadline = time.monotonic() + 30
    while not (out := client.get("/api/ideas").json())["ready"]:
        assert time.monotonic() < deadline, "prototypes took over 30 s"
        time.sleep(0.1)
    assert out["method"] == "greedy"  # a small MLP: the seed's greedy pixel search is quick
    images = torch.tensor(out["images"])
    assert images.shape == (10, 28, 28) and images.min() >= 0 and images.max() <= 1
    probs = torch.softmax(_model(app)(images[:, None]), 1)
    assert (probs.argmax(1) == torch.arange(10)).all()
    assert np.allclose(out["probabilities"], probs.diagonal().tolist(), atol=2e-3)
    png = client.get("/api/ideas/3.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (112, 112)


def test_fix_reaches_the_target(app, client, blob_images) -> None:
    images, labels = blob_images
    x = images[0] / 255.0
    target = (int(labels[0]) + 3) % 10
    r = client.post("/api/fix", json={"image": x.tolist(), "target": target, "max_edits": 200})
    assert r.status_code == 200, r.text
    out = r.json()
    edited, changed = torch.tensor(out["image"]), torch.tensor(out["changed"]).bool()
    assert out["n_changed"] == int(changed.sum())
    assert torch.allclose(edited[~changed], torch.tensor(x, dtype=torch.float32)[~changed], atol=1e-3)
    if out["success"]:
        assert out["prob_after"] >= 0.9 and int(np.argmax(out["probabilities"])) == target


def test_busy_model_gets_503(app, client) -> None:
    engine = app.state.engine
    engine.max_pending, saved = 0, engine.max_pending
    try:
        r = client.post("/api/predict", json={"image": [[0.0] * 28] * 28})
    finally:
        engine.max_pending = saved
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "waiting" in r.json()["error"]


def test_no_pickle_and_no_request_paths_in_the_package() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "kangae" / "serve"
    text = "\n".join(p.read_text() for p in src.rglob("*.py"))
    assert "pickle" not in text and "torch.load(" not in text
    assert "StaticFiles" not in text and "FileResponse" not in text


def test_canvas_fast_path_matches_preprocess() -> None:
    """An opaque canvas goes to 8-bit gray before preprocessing: the same image for gray
    strokes (up to float32 rounding of the luminance weights), and within 1/510 of ``to_gray``
    for coloured ones; transparent canvases take the full path."""
    from kangae.data.preprocess import to_gray
    from kangae.serve.inputs import _opaque_to_gray, read_image

    canvas = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    canvas.paste(drawing().resize((140, 140), Image.LANCZOS), (70, 70))  # anti-aliased gray edges
    want = preprocess(canvas).image
    got = read_image(png_b64(canvas)).image
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (40, 40, 3)).astype(np.uint8))
    assert np.abs(to_gray(_opaque_to_gray(colour)) - to_gray(colour)).max() <= 1 / 510 + 1e-9
    clear = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    assert _opaque_to_gray(clear) is clear


def test_fix_wiring_with_a_stand_in_search(serve_run, blob_images, monkeypatch) -> None:
    """How /api/fix turns an EditResult into JSON, with a stand-in for fewest_pixel_edits that
    lights the target's square of the blobs one pixel at a time (the real search is tested above)."""
    import types
    from dataclasses import dataclass

    from fastapi.testclient import TestClient

    from kangae.serve import app_for

    @dataclass
    class EditResult:
        images: torch.Tensor
        original: torch.Tensor
        changed: torch.Tensor
        n_changed: torch.Tensor
        prob_before: torch.Tensor
        prob_after: torch.Tensor
        success: torch.Tensor
        metrics: dict

    calls = []

    def fewest_pixel_edits(model, images, targets, levels=(0.0, 1.0), threshold=0.9, max_edits=64):
        calls.append((images.shape, targets.tolist(), tuple(levels), threshold, max_edits))
        k = int(targets[0])
        r, c = 3 + 12 * (k // 5), 2 + 5 * (k % 5)
        x = images.clone()
        prob = lambda z: torch.softmax(model(z), 1)[0, k]  # noqa: E731
        before = prob(x)
        for i in range(36):
            if prob(x) >= threshold or i >= max_edits:
                break
            x[0, 0, r + i // 6, c + i % 6] = 1.0
        changed = x != images
        return EditResult(x, images, changed, changed.flatten(1).sum(1), before[None], prob(x)[None],
                          (prob(x) >= threshold)[None], {"seconds": 0.01, "levels": "0,1"})

    monkeypatch.setitem(__import__("sys").modules, "kangae.probes.attacks",
                        types.SimpleNamespace(fewest_pixel_edits=fewest_pixel_edits))
    images, labels = blob_images
    x = images[0] / 255.0
    target = (int(labels[0]) + 1) % 10
    app = app_for(serve_run, ideas_method="greedy")
    with TestClient(app) as client:
        out = client.post("/api/fix", json={"image": x.tolist(), "target": target, "max_edits": 30}).json()
    assert calls == [((1, 1, 28, 28), [target], (0.0, 1.0), 0.9, 30)]
    changed = torch.tensor(out["changed"]).bool()
    assert out["n_changed"] == int(changed.sum()) > 0
    edited = torch.tensor(out["image"])
    assert torch.allclose(edited[~changed], torch.tensor(x, dtype=torch.float32)[~changed], atol=1e-3)
    assert (edited[changed] == 1.0).all()
    with torch.no_grad():
        probs = torch.softmax(_model(app)(edited[None, None]), 1)
    assert np.allclose(out["probabilities"], probs[0].tolist(), atol=1e-3)
    assert out["success"] == (out["prob_after"] >= 0.9)
    assert out["metrics"] == {"seconds": 0.01, "levels": "0,1"}


def test_predictions_do_not_wait_behind_a_slow_explanation(app, client) -> None:
    import threading

    engine = app.state.engine
    release, started = threading.Event(), threading.Event()
    slow_explain = engine.explain

    def stuck(*args, **kwargs):
        started.set()
        assert release.wait(20)
        return slow_explain(*args, **kwargs)

    grid = [[0.0] * 28] * 28
    engine.explain = stuck
    try:
        workers = [threading.Thread(target=lambda: client.post("/api/explain", json={"image": grid}))
                   for _ in range(engine.workers)]  # as many as there are model threads
        for w in workers:
            w.start()
        assert started.wait(10)
        time.sleep(0.2)
        t0 = time.perf_counter()
        for _ in range(3):
            assert client.post("/api/predict", json={"image": grid}).status_code == 200
        assert time.perf_counter() - t0 < 5 and all(w.is_alive() for w in workers)
    finally:
        release.set()
        del engine.explain
        for w in workers:
            w.join(20)


def test_the_server_takes_its_methods_from_the_registry(client, blob_images, monkeypatch) -> None:
    """A method registered in one place (the explanation registry) is served at once, and one
    that needs a conv layer is refused with 400 on a model without one."""
    from kangae.probes import registry

    registry.explainers()  # the built-in methods first, then a private copy to add one to
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    @registry.register_explainer("pixels-test", gradient=False, description="the image itself")
    def _pixels(model, x, t, ctx, **options):
        return x.detach() * (t.view(-1, 1, 1, 1) + 1)  # known answer: the pixels times target + 1

    x = torch.tensor(blob_images[0][3], dtype=torch.float32) / 255
    out = client.post("/api/explain", json={"image": x.tolist(), "method": "pixels-test", "target": 2})
    assert out.status_code == 200, out.text
    assert out.json()["method"] == "pixels-test"
    assert torch.allclose(torch.tensor(out.json()["attribution"]), 3 * x, atol=1e-4)
    conv = client.post("/api/explain", json={"image": x.tolist(), "method": "gradcam"})
    assert conv.status_code == 400 and "convolutional layer" in conv.json()["error"]
    typo = client.post("/api/explain", json={"image": x.tolist(), "method": "saliancy"})
    assert typo.status_code == 400 and "Did you mean 'saliency'" in typo.json()["error"]
