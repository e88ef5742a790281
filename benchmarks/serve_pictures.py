"""Speed of ``kangae serve``'s picture page at ImageNet size: what a user waits for.

Builds a ResNet-18 layout in plain torch (basic blocks 64-128-256-512, 1,000 classes, random
weights: the cost of a forward pass does not depend on the weights), saves it as a user would
give it (``file.py:factory``, safetensors weights, a card with ``"classes": "imagenet"``) and
serves it in-process. Then it times, for one 640x480 photo-sized picture: ``POST
/api/predict`` (decoding, resize and centre crop to 224, the forward pass), ``POST
/api/explain`` with Grad-CAM and with the app's mask, and ``GET /api/prototypes/{k}`` for one
class and for a batch of ``--batch`` classes asked for together; and a prediction sent while a
prototype is being computed (it must not wait for it).

The reference is ``kangae explain``'s mask (300 steps, the same Fong & Vedaldi settings at
224 px): the ratio is what the app's ``--mask-steps`` saves. ``--no-reference`` skips it.

Usage: python benchmarks/serve_pictures.py [--mask-steps 40] [--proto-steps 64] [--batch 4]
       [--no-reference]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FACTORY = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


def resnet18():
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))
'''


def _url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mask-steps", type=int, default=None)
    ap.add_argument("--proto-steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()

    from fastapi.testclient import TestClient
    from safetensors.torch import save_file

    from kangae.serve import app_for
    from kangae.serve.picture_engine import MASK_STEPS, PROTO_STEPS

    mask_steps, proto_steps = args.mask_steps or MASK_STEPS, args.proto_steps or PROTO_STEPS
    root = Path(tempfile.mkdtemp(prefix="kangae-serve-pictures-"))
    (root / "net.py").write_text(FACTORY)
    ns: dict = {}
    exec(compile(FACTORY, str(root / "net.py"), "exec"), ns)  # noqa: S102 - our own text above
    torch.manual_seed(0)
    save_file(ns["resnet18"]().state_dict(), root / "net.safetensors")
    (root / "card.json").write_text(json.dumps({"size": 224, "classes": "imagenet", "name": "resnet18-layout",
                                                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    app = app_for(f"{root / 'net.py'}:resnet18", weights=root / "net.safetensors", card=root / "card.json",
                  allowed_hosts=["testserver"], mask_steps=mask_steps, proto_steps=proto_steps,
                  proto_batch=max(8, args.batch))
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    image = _url(photo)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"kangae serve, picture page: ResNet-18 layout at 224 px, 1,000 classes; {cpus} CPUs, "
          f"torch {torch.get_num_threads()} threads (shared with other work: timings are noisy)")
    with TestClient(app) as client:
        client.post("/api/predict", json={"image": image})  # warm-up
        times = []
        for _ in range(5):
            r, s = _timed(lambda: client.post("/api/predict", json={"image": image}))
            times.append(s)
        crop = r.json()["crop"]
        print(f"  predict (640x480 JPEG -> 224 crop)  median {1000 * sorted(times)[2]:7.1f} ms of 5")
        body = {"image": crop, "prepared": True, "method": "gradcam"}
        client.post("/api/explain", json=body)  # the layer model's copy, captum's import
        _, s = _timed(lambda: client.post("/api/explain", json=body))
        print(f"  explain gradcam                     {s:7.2f} s")
        r, s_mask = _timed(lambda: client.post("/api/explain", json={**body, "method": "mask"}))
        print(f"  explain mask, {mask_steps} steps              {s_mask:7.2f} s   ({r.json()['summary']})")
        r, s = _timed(lambda: client.get("/api/prototypes/1?wait=30").json())
        while not r["ready"]:
            r = client.get("/api/prototypes/1?wait=30").json()
        s = r["seconds"]
        print(f"  prototype, 1 class, {proto_steps} steps       {s:7.2f} s   (p={r['probability']:.3f})")
        # a batch of classes asked for together, and predictions meanwhile
        ks = list(range(2, 2 + args.batch))
        stop, during = threading.Event(), []

        def predict_meanwhile() -> None:
            while not stop.is_set():
                _, t = _timed(lambda: client.post("/api/predict", json={"image": image}))
                during.append(t)

        first = client.get(f"/api/prototypes/{ks[0]}").json()  # starts at once, alone
        for k in ks[1:]:
            client.get(f"/api/prototypes/{k}")
        th = threading.Thread(target=predict_meanwhile)
        th.start()
        out = [client.get(f"/api/prototypes/{k}?wait=30").json() for k in ks]
        while not all(o["ready"] for o in out):
            out = [client.get(f"/api/prototypes/{k}?wait=30").json() for k in ks]
        stop.set()
        th.join()
        batches = sorted({(o["batch"], o["seconds"]) for o in out})
        print(f"  prototypes, {args.batch} classes asked together: batches (classes, s) {batches}"
              f"{' (first alone: it had started)' if not first['ready'] else ''}")
        if during:
            median = 1000 * sorted(during)[len(during) // 2]
            print(f"  predict while prototypes compute    median {median:7.1f} ms "
                  f"of {len(during)}, max {1000 * max(during):.1f} ms")
    if not args.no_reference:
        from kangae.probes.attribution import explain

        model = app.state.engine.model
        x = torch.from_numpy(np.asarray(Image.open(io.BytesIO(base64.b64decode(crop.split(",", 1)[1]))))
                             ).permute(2, 0, 1).float()[None] / 255
        _, s_ref = _timed(lambda: explain(model, x, method="mask"))
        print(f"  reference: kangae explain's mask, 300 steps  {s_ref:7.2f} s;  app's mask "
              f"{s_mask:.2f} s: {s_ref / s_mask:.1f}x quicker")
    app.state.engine.close()


if __name__ == "__main__":
    main()
