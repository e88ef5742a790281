"""Pictures in colour: RGB images, overlays on the user's own picture, boxes; grey as before."""

from __future__ import annotations

import numpy as np
import torch

from kangae.probes.explanation import Explanation
from kangae.render.explain import draw_box, heat_rgb, overlay_pil, panel, peak
from kangae.render.images import panel_scale, tile_images, to_pil


def _rgb_picture() -> torch.Tensor:
    x = torch.zeros(3, 8, 8)
    x[0, :, :4] = 1.0  # red left half
    x[2, :, 4:] = 1.0  # blue right half
    return x


def test_colour_pictures_keep_their_colours_and_grey_stays_grey():
    a = np.asarray(to_pil(_rgb_picture(), scale=2))
    assert a.shape == (16, 16, 3)
    assert tuple(a[0, 0]) == (255, 0, 0) and tuple(a[0, -1]) == (0, 0, 255)
    grey = torch.full((1, 4, 4), 0.5)
    g = np.asarray(to_pil(grey, scale=1))
    assert (g == 128).all()  # one channel: the same value in R, G and B, as before
    sheet = np.asarray(tile_images(torch.stack([_rgb_picture()] * 3), 3, 1, False))
    assert tuple(sheet[2, 2]) == (255, 0, 0) and tuple(sheet[2, 2 + 8 + 2 + 7]) == (0, 0, 255)


def test_overlay_on_a_colour_picture_leaves_it_alone_where_the_map_is_zero():
    x = _rgb_picture()
    a = torch.zeros(1, 8, 8)
    a[0, 2, 6] = 1.0  # one hot pixel, on the blue half
    over = np.asarray(overlay_pil(x, a, scale=1))
    assert tuple(over[5, 1]) == (255, 0, 0)  # untouched where the map is 0
    heat = heat_rgb(a)[2, 6].astype(float)
    want = 0.45 * np.array([0, 0, 255.0]) + 0.55 * heat
    assert np.abs(over[2, 6] - want).max() <= 1
    # a grey digit is blended with the whole map, as before
    digit = torch.zeros(1, 8, 8)
    old = np.asarray(overlay_pil(digit, a, scale=1)).astype(int)
    base = np.zeros((8, 8, 3))
    expect = (base * 0.45 + heat_rgb(a) * 0.55).round()
    assert np.abs(old - expect).max() <= 1


def test_box_and_peak_drawn_where_the_object_is():
    a = torch.zeros(1, 16, 16)
    a[0, 5, 9] = 2.0
    assert peak(a) == (9, 5)
    tile = to_pil(torch.zeros(3, 16, 16), scale=4)
    boxed = np.asarray(draw_box(tile, (8, 4, 12, 8), 4, peak(a)))
    assert tuple(boxed[4 * 4, 8 * 4 + 1]) == (0, 255, 120)  # the top edge of the box
    assert tuple(boxed[5 * 4 + 2, 9 * 4 + 2]) == (255, 255, 255)  # the cross at the peak
    assert tuple(np.asarray(tile)[4 * 4, 8 * 4 + 6]) == (0, 0, 0)  # the tile itself is unchanged
    p = panel(torch.rand(3, 16, 16), a, torch.rand(3, 16, 16), "t", box=(8, 4, 12, 8))
    assert p.size[1] > 16 * 8


def test_panels_scale_digits_as_before_and_photos_to_a_readable_size():
    assert panel_scale(28) == 8 and panel_scale(56) == 8
    assert panel_scale(64) == 7 and panel_scale(224) == 2 and panel_scale(1000) == 1


def test_an_extremal_explanation_draws_one_row_per_area_in_colour():
    n, k = 2, 3
    perturbed = torch.zeros(n, k, 3, 8, 8)
    perturbed[:, :, 1] = 1.0  # green
    e = Explanation(method="extremal", attribution=torch.rand(n, 1, 8, 8), target=torch.zeros(n).long(),
                    prob=torch.ones(n), perturbed=perturbed, areas=(0.05, 0.1, 0.2))
    pic = np.asarray(e.picture())
    scale = 224 // 8
    assert pic.shape[0] == (1 + k) * (8 * scale + 2) + 2
    assert tuple(pic[(8 * scale + 2) * 3 + 5, 5]) == (0, 255, 0)  # the last area's row, in green
