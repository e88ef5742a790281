"""A small MLP trained once on the synthetic blobs, and its app, shared by the serve tests."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import write_dataset


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class k of the blobs is a bright square at the k-th place: an MLP learns them in 2 epochs."""
    import kangae
    from kangae.data import clear_cache

    root = tmp_path_factory.mktemp("serve-data")
    write_dataset(root / "mnist")
    out = tmp_path_factory.mktemp("serve-run") / "mlp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KANGAE_DATA", str(root))
        mp.setenv("KANGAE_OFFLINE", "1")
        mp.setenv("KANGAE_CACHE", str(root / "cache"))
        clear_cache()
        kangae.train("mlp", out=out, epochs=2, batch_size=32, progress=False, tensorboard=False,
                     snapshots=False, model_args={"hidden": 64})
        clear_cache()
    return out


@pytest.fixture(scope="session")
def blob_images() -> tuple[np.ndarray, np.ndarray]:
    """Test-split blobs (uint8 (N, 28, 28), labels) as the run was trained on."""
    from tests.conftest import make_blobs

    return make_blobs(40, 1)


@pytest.fixture(scope="module")
def app(serve_run: Path):
    from kangae.serve import app_for
    from kangae.serve.app import LOCAL_HOSTS

    return app_for(serve_run, allowed_hosts=[*LOCAL_HOSTS, "testserver"])  # TestClient's host


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def png_b64(img: Image.Image, data_url: bool = True) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


def drawing(points: list[tuple[int, int]] | None = None, size: int = 280) -> Image.Image:
    """Black strokes on white, as the page's canvas sends them (a 7 by default)."""
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).line(points or [(70, 60), (210, 60), (120, 240)], fill="black", width=20)
    return img


@pytest.fixture(scope="session")
def colour_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The colour model of tests/serve/colours.py as a user gives it: file.py:factory, a
    safetensors file and a card with the class names (32x32, centre crop after a resize to 36)."""
    import json

    from safetensors.torch import save_file

    from tests.serve.colours import NAMES, colour_weights

    root = tmp_path_factory.mktemp("colour-model")
    save_file(colour_weights(), root / "colours.safetensors")
    card = {"channels": 3, "size": 32, "resize": 36, "preprocess": "center-crop", "normalizes_itself": True,
            "classes": list(NAMES), "name": "colours"}
    (root / "card.json").write_text(json.dumps(card))
    return {"spec": f"{Path(__file__).with_name('colours.py')}:colour_net",
            "weights": str(root / "colours.safetensors"), "card": str(root / "card.json")}


@pytest.fixture(scope="module")
def picture_app(colour_spec: dict[str, str]):
    from kangae.serve import app_for
    from kangae.serve.app import LOCAL_HOSTS

    return app_for(colour_spec["spec"], weights=colour_spec["weights"], card=colour_spec["card"],
                   allowed_hosts=[*LOCAL_HOSTS, "testserver"], mask_steps=20, proto_steps=24)


@pytest.fixture(scope="module")
def picture_client(picture_app):
    from fastapi.testclient import TestClient

    with TestClient(picture_app) as c:
        yield c
