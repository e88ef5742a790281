import pytest
import torch
from torch import nn

from kangae.probes import verify_prototypes


class Quadrants(nn.Module):
    """Class k = which quadrant holds the most ink; translation by 2 px rarely changes it."""

    def forward(self, x):
        q = torch.stack([x[..., :14, :14].sum((1, 2, 3)), x[..., :14, 14:].sum((1, 2, 3)),
                         x[..., 14:, :14].sum((1, 2, 3)), x[..., 14:, 14:].sum((1, 2, 3))], 1)
        return q * 10

    def parameters(self, recurse=True):
        yield torch.zeros(1)


def test_rank_probability_margin_and_robustness_known_answers():
    x = torch.zeros(4, 1, 28, 28)
    for k, (r, c) in enumerate([(4, 4), (4, 18), (18, 4), (18, 18)]):
        x[k, 0, r : r + 6, c : c + 6] = 1
    targets = torch.tensor([0, 1, 2, 0])  # the last one is wrong on purpose
    out = verify_prototypes(Quadrants(), x, targets, class_names=list("abcd"))
    rows = out["prototypes"]
    assert [r["rank"] for r in rows] == [1, 1, 1, 2]
    assert rows[0]["probability"] > 0.999 and rows[0]["margin"] > 0.999
    assert rows[3]["runner_up"] == "d" and rows[3]["margin"] < -0.999
    assert rows[0]["shift_robustness"] == 1.0 and rows[0]["noise_robustness"] == 1.0
    assert rows[3]["shift_robustness"] == 0.0
    assert not out["summary"]["all_rank_1"]


def test_shift_robustness_counts_shifts_that_cross_a_boundary():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:10, 13] = 1  # one column left of the middle: a shift right by >= 1 px moves it
    out = verify_prototypes(Quadrants(), x, torch.tensor([0]), max_shift=2)
    # kept in the left half for dx in {-2, -1, 0} (3 of 5), whatever dy
    assert out["prototypes"][0]["shift_robustness"] == pytest.approx(15 / 25)


def test_transfer_to_other_models():
    x = torch.zeros(2, 1, 28, 28)
    x[0, 0, 2:8, 2:8] = 1
    x[1, 0, 20:26, 20:26] = 1

    class Flipped(Quadrants):
        def forward(self, x):
            return super().forward(x).flip(1)

    out = verify_prototypes(Quadrants(), x, torch.tensor([0, 3]),
                            check_with=[Quadrants(), Flipped()])
    assert [r["transfer"] for r in out["prototypes"]] == [[True, False], [True, False]]
    assert out["summary"]["transfer_rate"] == [1.0, 0.0]
