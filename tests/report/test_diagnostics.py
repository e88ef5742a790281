import json

import pytest
from click.testing import CliRunner

from kangae.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_confusion_writes_curves_matrix_pairs_and_json(mlp_run, tmp_path):
    res = invoke("confusion", mlp_run, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "c" / "confusion.json").read_text())
    matrix = out["matrix"]
    assert sum(map(sum, matrix)) == 200  # the blob test split
    assert out["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(10)) / 200)
    assert [h["epoch"] for h in out["history"]] == [1, 2]
    for name in ("curves.png", "confusion.png", "confused-pairs.png"):
        assert (tmp_path / "c" / name).stat().st_size > 1000


def test_calibrate_reports_before_and_after(mlp_run, tmp_path):
    res = invoke("calibrate", mlp_run, "--out", tmp_path / "k", "--bins", "10")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "k" / "calibration.json").read_text())
    assert out["fit_examples"] == 100 and out["eval_examples"] == 100
    assert out["before"]["accuracy"] == out["after"]["accuracy"]
    assert out["after"]["nll"] <= out["before"]["nll"] + 0.05  # fitted on the other half
    assert len(out["before"]["bin_count"]) == 10 and sum(out["before"]["bin_count"]) == 100
    assert "ECE" in res.output and (tmp_path / "k" / "reliability.png").exists()


def test_diagnostics_need_a_run(tmp_path):
    for cmd in ("confusion", "calibrate"):
        res = invoke(cmd, tmp_path / "missing")
        assert res.exit_code == 2 and "no such run folder" in res.output
