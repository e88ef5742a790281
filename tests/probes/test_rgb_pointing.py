"""Known answer on colour pictures: a small ResNet trained briefly on ``shapes`` looks at the
shape that decides the class, and its masks and Grad-CAM point at it (the pointing game)."""

from __future__ import annotations

import pytest

from kangae.data.shapes import load_shapes
from kangae.probes.attribution import explain
from kangae.probes.faithfulness import centre_map, pointing_hits

N = 48  # test pictures
TOLERANCE = 1  # px around the shape's box, as for the digits


@pytest.fixture(scope="module")
def game(shapes_resnet_run):
    run = shapes_resnet_run  # trained once per session (tests/conftest.py)
    test = load_shapes("test")
    x, y, boxes = test.data.floats()[:N], test.data.labels[:N], test.boxes[:N]
    centre = pointing_hits(centre_map(N, tuple(x.shape[-2:])), boxes, TOLERANCE).float().mean()
    return run, x, y, boxes, float(centre)


def test_the_briefly_trained_resnet_reads_the_shapes(game):
    run, x, y, _, _ = game
    assert run.history[-1]["val_acc"] >= 0.98
    assert getattr(run.model, "input_shape", None) == (3, 64, 64)
    assert (run.predict(x).argmax(1) == y).float().mean() >= 0.98


@pytest.mark.parametrize("method, options", [
    ("gradcam", {}),
    ("mask", {"steps": 150}),
    ("extremal", {"steps": 150, "areas": (0.05,)}),  # the smallest of the default areas
])
def test_masks_and_gradcam_point_at_the_deciding_shape(game, method, options):
    run, x, y, boxes, centre = game
    e = explain(run.model, x, y, method=method, **options)
    rate = float(pointing_hits(e.attribution, boxes, TOLERANCE).float().mean())
    line = (f"pointing game, {N} shapes test pictures, {TOLERANCE} px: {method} {rate:.1%} "
            f"(centre baseline {centre:.1%})")
    print(line)
    assert centre < 0.5, line  # the shape is placed anywhere: the centre is no answer
    assert rate >= 0.9, line
    if method == "gradcam":
        assert e.metrics["layer"] == "stage3"
    else:
        assert e.metrics["defaults"].startswith("kangae")  # 64 px: the small-image settings
