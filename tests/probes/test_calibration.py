import math

import pytest
import torch

from kangae.probes.calibration import calibration, fit_temperature, temperature_scaling


def _logits_with_confidence(conf: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Logits whose softmax puts ``conf`` on class 0 and the rest evenly on the others."""
    other = (1 - conf) / (k - 1)
    logits = torch.log(other)[:, None].repeat(1, k)
    logits[:, 0] = torch.log(conf)
    return logits


def test_a_perfectly_calibrated_predictor_has_zero_ece():
    # in every bin, exactly the share `confidence` of the examples is right
    confs, labels = [], []
    for c in torch.linspace(0.2, 0.98, 15):
        n = 1000
        right = round(float(c) * n)
        confs.append(torch.full((n,), float(c)))
        labels.append(torch.cat([torch.zeros(right), torch.ones(n - right)]).long())
    res = calibration(_logits_with_confidence(torch.cat(confs)), torch.cat(labels))
    assert res.metrics["ece"] < 1e-3 and res.metrics["mce"] < 1e-3


def test_a_known_overconfident_predictor_matches_the_closed_form():
    # always 90% sure, right 60% of the time: ECE = MCE = 0.3
    conf = torch.full((1000,), 0.9)
    labels = torch.cat([torch.zeros(600), torch.ones(400)]).long()
    res = calibration(_logits_with_confidence(conf), labels)
    assert res.metrics["ece"] == pytest.approx(0.3, abs=1e-6)
    assert res.metrics["mce"] == pytest.approx(0.3, abs=1e-6)
    assert res.metrics["accuracy"] == pytest.approx(0.6)
    # NLL = -(0.6 log 0.9 + 0.4 log(0.1/9)); Brier = 0.6*(0.1^2 + 9 (0.1/9)^2) + 0.4*(...)
    nll = -(0.6 * math.log(0.9) + 0.4 * math.log(0.1 / 9))
    assert res.metrics["nll"] == pytest.approx(nll, rel=1e-6)
    o = 0.1 / 9
    brier_right = (1 - 0.9) ** 2 + 9 * o**2
    brier_wrong = 0.9**2 + (1 - o) ** 2 + 8 * o**2
    assert res.metrics["brier"] == pytest.approx(0.6 * brier_right + 0.4 * brier_wrong, rel=1e-6)
    assert int(res.bin_count.sum()) == 1000 and int((res.bin_count > 0).sum()) == 1


def test_temperature_scaling_refuses_too_few_examples_to_fit():
    """Fitted on one picture, T came out as 3.5e7 and the ECE rose from 0% to 90%."""
    from kangae.probes.inputs import ProbeInputError

    logits, labels = torch.randn(9, 10, generator=torch.Generator().manual_seed(0)), torch.zeros(9).long()
    with pytest.raises(ProbeInputError, match="at least 5 examples to fit T on.*9 examples give 4"):
        temperature_scaling(logits, labels)
    temperature_scaling(torch.cat([logits, logits[:1]]), torch.zeros(10).long())


def test_temperature_scaling_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60000, 10, generator=g) * 3
    true_t = 2.5
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.03)
    out = temperature_scaling(logits, labels)
    assert out["after"].metrics["ece"] < out["before"].metrics["ece"] / 3
    assert out["after"].metrics["nll"] < out["before"].metrics["nll"]
    # accuracy does not change: temperature keeps the argmax
    assert out["after"].metrics["accuracy"] == out["before"].metrics["accuracy"]
