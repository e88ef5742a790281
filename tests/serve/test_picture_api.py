"""The picture page's API for any image classifier, on the colour model of colours.py, whose
answers are known: the class of a picture is its mean colour, Grad-CAM of a class is each
pixel's own logit for it, and a class's prototype raises exactly the class's channels."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from kangae.data.folder import prepare_picture
from kangae.errors import KangaeError
from kangae.models.card import read_card

from .colours import COLOURS, NAMES, pixel_logits


def _url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def _decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _halves() -> Image.Image:
    """Red on the left three quarters, blue on the right quarter, 80x60."""
    a = np.zeros((60, 80, 3), np.uint8)
    a[:, :60, 0] = 255
    a[:, 60:, 2] = 255
    return Image.fromarray(a)


def _one_line_400(r) -> str:
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error and "\n" not in error and "Traceback" not in error
    return error


def test_info_page_and_docs(picture_client) -> None:
    info = picture_client.get("/api/info").json()
    assert info["mode"] == "picture" and info["classes"] == list(NAMES) and info["shape"] == [3, 32, 32]
    assert info["explain"] == "gradcam" and info["mask_steps"] == 20 and info["prototypes"]["steps"] == 24
    page = picture_client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    for needle in ('id="file"', 'id="drop"', 'id="top"', 'id="crop"', 'id="cam"', 'id="mask"', 'id="meant"',
                   "/static/picture.js"):
        assert needle in page.text
    assert 'id="pad"' not in page.text  # no drawing canvas for a colour model
    js = picture_client.get("/static/picture.js")
    assert js.status_code == 200 and "http://" not in js.text and "https://" not in js.text
    spec = picture_client.get("/openapi.json").json()
    assert {"/api/predict", "/api/explain", "/api/prototypes/{target}"} <= set(spec["paths"])
    assert "/api/fix" not in spec["paths"]
    assert "top" in spec["components"]["schemas"]["PicturePredictOut"]["properties"]


@pytest.mark.parametrize("k", range(8))
def test_top1_is_the_colour(picture_client, k: int) -> None:
    colour = tuple(int(v) * 255 for v in COLOURS[k])
    r = picture_client.post("/api/predict", json={"image": _url(Image.new("RGB", (50, 41), colour))})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["predicted"] == k and out["name"] == NAMES[k] and out["top"][0]["index"] == k
    probs = [c["probability"] for c in out["top"]]
    assert len(out["top"]) == 5 and probs == sorted(probs, reverse=True) and out["confidence"] == probs[0]
    assert out["upload"] == [50, 41] and out["size"] == [32, 32]


def test_the_crop_is_what_prepare_picture_makes(picture_app, picture_client, colour_spec) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (45, 70, 4), dtype=np.uint8), "RGBA")  # laid on white
    out = picture_client.post("/api/predict", json={"image": _url(img)}).json()
    want = prepare_picture(img, read_card(colour_spec["card"]))
    crop = _decode(out["crop"])
    assert crop.shape == (32, 32, 3) and np.array_equal(crop, want.permute(1, 2, 0).numpy())
    assert out["preprocessing"] == "70x45: shorter side resized to 36, centre 32x32 cropped"
    probs = torch.softmax(picture_app.state.engine.model(want[None].float() / 255), 1)[0]
    assert [c["index"] for c in out["top"]] == probs.argsort(descending=True)[:5].tolist()
    want_probs = probs.sort(descending=True).values[:5]
    assert np.allclose([c["probability"] for c in out["top"]], want_probs, atol=1e-4)
    # the crop sent back as prepared is taken as it is: the same answer
    again = picture_client.post("/api/predict", json={"image": out["crop"], "prepared": True}).json()
    assert again["top"] == out["top"] and again["crop"] == out["crop"]
    assert again["preprocessing"] == "taken as already prepared (32x32)"


def test_a_jpeg_and_a_palette_gif_work(picture_client) -> None:
    for img, fmt in ((Image.new("RGB", (40, 40), (0, 250, 250)), "JPEG"),
                     (Image.new("RGB", (40, 40), (0, 255, 255)).convert("P"), "GIF")):
        assert picture_client.post("/api/predict", json={"image": _url(img, fmt)}).json()["name"] == "cyan"


def test_gradcam_is_each_pixels_logit(picture_client) -> None:
    crop = picture_client.post("/api/predict", json={"image": _url(_halves())}).json()["crop"]
    x = torch.from_numpy(_decode(crop).copy()).permute(2, 0, 1).float() / 255
    for target, name in ((None, "red"), (4, "blue")):
        body = {"image": crop, "prepared": True, "method": "gradcam",
                "target": "auto" if target is None else target}
        r = picture_client.post("/api/explain", json=body)
        assert r.status_code == 200, r.text
        e = r.json()
        assert e["name"] == name and e["method"] == "gradcam" and e["size"] == [32, 32]
        cam = pixel_logits(x)[NAMES.index(name)].clamp(min=0)
        heat = _decode(e["heat"]).astype(np.float64) / 255
        assert np.abs(heat - (cam / cam.max()).numpy()).max() <= 1 / 255 + 1e-6
        assert _decode(e["overlay"]).shape == (32, 32, 3)


def test_the_mask_rests_on_the_red(picture_client) -> None:
    crop = picture_client.post("/api/predict", json={"image": _url(_halves())}).json()["crop"]
    e = picture_client.post("/api/explain", json={"image": crop, "prepared": True, "method": "mask"}).json()
    assert e["method"] == "mask" and e["metrics"]["steps"] == 20 and e["name"] == "red"
    assert e["metrics"]["prob_after"] < e["probability"]
    red = _decode(crop)[..., 0] > 128
    heat = _decode(e["heat"]).astype(float)
    assert heat[red].mean() > heat[~red].mean() + 50
    assert _decode(e["overlay"]).shape == (32, 32, 3)


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_uploads_are_one_line_4xx(picture_client) -> None:
    post = lambda body, path="/api/predict": picture_client.post(path, json=body)  # noqa: E731
    assert "not valid base64" in _one_line_400(post({"image": "%%%"}))
    assert "unknown format" in _one_line_400(post({"image": base64.b64encode(b"hello").decode()}))
    assert "too large" in _one_line_400(post({"image": base64.b64encode(_png_header(9000, 9000)).decode()}))
    truncated = _url(Image.new("RGB", (40, 40), "red"))[:-40]
    _one_line_400(post({"image": truncated}))
    small = _url(Image.new("RGB", (20, 20), "red"))
    assert "must be 32x32" in _one_line_400(post({"image": small, "prepared": True}))
    assert post({"image": [[0.0] * 32] * 32}).status_code == 422
    crop = _url(Image.new("RGB", (32, 32), "red"))
    explain = lambda **body: _one_line_400(post({"image": crop, **body}, "/api/explain"))  # noqa: E731
    assert "unknown explanation method" in explain(method="gradcan")
    assert "picture page serves" in explain(method="rise")
    assert "target" in explain(target=8)
    assert picture_client.get("/api/prototypes/8").status_code == 400
    assert picture_client.get("/api/prototypes/1?wait=99").status_code == 422


def test_body_limit_is_16_mib(picture_client) -> None:
    r = picture_client.post("/api/predict", content=b"x" * ((16 << 20) + 1),
                            headers={"content-type": "application/json"})
    assert r.status_code == 413 and "16,777,216" in r.json()["error"]


def test_prototypes_raise_exactly_the_class_channels(picture_app, picture_client) -> None:
    model = picture_app.state.engine.model
    for k in (NAMES.index("red"), NAMES.index("cyan")):
        p = picture_client.get(f"/api/prototypes/{k}?wait=20").json()
        assert p["ready"] and p["name"] == NAMES[k] and p["settings"]["steps"] == 24
        img = _decode(p["image"]).astype(float) / 255
        assert img.shape == (32, 32, 3)
        means = img.mean((0, 1))
        for c in range(3):  # the class's channels rise; the others have no gradient and stay
            assert (means[c] > 0.65) if COLOURS[k, c] else (0.4 < means[c] < 0.6), (NAMES[k], means)
        x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
        prob = torch.softmax(model(x), 1)[0, k]
        assert abs(float(prob) - p["probability"]) < 0.01


def test_prototypes_are_batched_cached_and_never_block_predictions(picture_app, picture_client) -> None:
    protos = picture_app.state.engine.prototypes
    gate, calls = threading.Event(), []
    compute = protos.compute

    def held(targets):
        calls.append(list(targets))
        gate.wait(20)
        return compute(targets)

    protos.compute = held
    try:
        first = picture_client.get("/api/prototypes/2").json()  # green: starts at once, held
        assert not first["ready"]
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = [picture_client.get(f"/api/prototypes/{k}").json() for k in (3, 5, 3)]
        assert [w["position"] for w in waiting] == [1, 2, 1]
        # predictions answer meanwhile
        r = picture_client.post("/api/predict", json={"image": _url(Image.new("RGB", (32, 32), "blue"))})
        assert r.status_code == 200 and r.json()["name"] == "blue"
        gate.set()
        done = picture_client.get("/api/prototypes/5?wait=20").json()
        assert done["ready"] and done["batch"] == 2
        assert calls == [[2], [3, 5]]  # the classes asked for meanwhile: one batch, each once
        assert picture_client.get("/api/prototypes/3").json()["ready"]  # kept
        assert calls == [[2], [3, 5]]
    finally:
        gate.set()
        protos.compute = compute


def test_prototype_cache_is_bounded_and_the_queue_too(picture_app) -> None:
    from kangae.serve.batcher import Busy
    from kangae.serve.picture_engine import Prototypes

    engine = picture_app.state.engine
    protos = Prototypes(engine.model, engine.shape, steps=2, keep=2, max_queued=3)
    try:
        for k in range(4):
            protos.get(k).result(timeout=20)
        assert len(protos._futures) == 3  # the 2 kept and the newest one
        gate = threading.Event()
        compute = protos.compute
        protos.compute = lambda ts: (gate.wait(20), compute(ts))[1]
        protos.get(5)
        deadline = time.monotonic() + 10
        while protos.position(5) != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for k in (6, 7, 0):
            protos.get(k)
        with pytest.raises(Busy, match="3 prototypes are waiting"):
            protos.get(1)
        gate.set()
    finally:
        protos.close()



def test_a_tour_of_the_users_model_is_served_with_its_prototypes(tmp_path, colour_spec) -> None:
    """tour.json of a tour of the user's model names the model ("serve_model": spec, weights
    and the card it completed) and the prototypes of the classes it showed."""
    from fastapi.testclient import TestClient
    from safetensors.torch import save_file

    from kangae.serve import app_for

    card = {**read_card(colour_spec["card"]).to_dict(), "inferred": ["channels"], "mean": None}
    model = {"spec": colour_spec["spec"], "weights": colour_spec["weights"], "card": card}
    images = torch.zeros(2, 3, 32, 32)
    images[0, 0] = 1.0  # red
    images[1, 1:] = 1.0  # cyan
    (tmp_path / "ideas").mkdir()
    protos = tmp_path / "ideas" / "prototypes.safetensors"
    save_file({"images": images, "targets": torch.tensor([1, 6])}, protos)
    (tmp_path / "tour.json").write_text(json.dumps({"serve_model": model, "quick": True,
                                                    "prototypes": "ideas/prototypes.safetensors"}))
    app = app_for(tmp_path, allowed_hosts=["testserver"], proto_steps=4)
    with TestClient(app) as client:
        assert client.get("/api/info").json()["mode"] == "picture"
        p = client.get("/api/prototypes/6").json()  # ready at once: the tour's own
        assert p["ready"] and p["source"] == "precomputed: prototypes.safetensors" and p["probability"] > 0.9
        want = (images[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert np.array_equal(_decode(p["image"]), want)
        p = client.get("/api/prototypes/2?wait=20").json()  # any other class: computed
        assert p["ready"] and p["source"] == "computed"
    save_file({"images": images, "targets": torch.tensor([1, 9])}, protos)
    with pytest.raises(KangaeError, match=r"'targets' must be classes 0\.\.7"):
        app_for(tmp_path)


def test_gradcam_beside_concurrent_predictions(picture_app, picture_client) -> None:
    """Grad-CAM hooks a layer of a private copy: forward passes of predictions running at the
    same time never reach its hook, and every map is the same."""
    from concurrent.futures import ThreadPoolExecutor

    crop = picture_client.post("/api/predict", json={"image": _url(_halves())}).json()["crop"]
    body = {"image": crop, "prepared": True, "method": "gradcam"}
    blue = _url(Image.new("RGB", (32, 32), "blue"))
    with ThreadPoolExecutor(4) as pool:
        predictions = [pool.submit(picture_client.post, "/api/predict", json={"image": blue})
                       for _ in range(40)]
        maps = [pool.submit(picture_client.post, "/api/explain", json=body) for _ in range(6)]
        answers = [f.result() for f in maps]
        assert all(f.result().json()["name"] == "blue" for f in predictions)
    assert all(r.status_code in (200, 503) for r in answers)
    heats = {r.json()["heat"] for r in answers if r.status_code == 200}
    assert len(heats) == 1
    engine = picture_app.state.engine
    assert engine._layer_model is not None and engine._layer_model is not engine.model
    assert not engine.model.net[0]._forward_hooks  # the shared model never carries a hook


def test_a_mask_the_page_no_longer_waits_for_stops_and_frees_the_mask_worker(colour_spec) -> None:
    """Over a real server: a client asks for a mask of 100,000 steps (a minute) and gives up
    after half a second; the server cancels the handler, the mask stops within a step, and the
    app's one mask worker takes the next job at once."""
    import httpx

    from kangae.serve import app_for
    from kangae.serve.runner import background_server

    app = app_for(colour_spec["spec"], weights=colour_spec["weights"], card=colour_spec["card"],
                  mask_steps=100_000, proto_steps=8)
    engine = app.state.engine
    with background_server(app) as url:
        crop = httpx.post(f"{url}/api/predict", json={"image": _url(_halves())}, timeout=10).json()["crop"]
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/api/explain", json={"image": crop, "prepared": True, "method": "mask"},
                       timeout=0.5)
        t0 = time.monotonic()
        assert engine.mask_pool.submit(lambda: "free").result(timeout=10) == "free"
        assert time.monotonic() - t0 < 5
        r = httpx.post(f"{url}/api/explain", json={"image": crop, "prepared": True, "method": "gradcam"},
                       timeout=10)
        assert r.status_code == 200  # the app goes on as before
