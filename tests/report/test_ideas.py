import json

import pytest
from click.testing import CliRunner
from PIL import Image

import kangae
from kangae.cli import cli
from kangae.errors import KangaeError
from kangae.models import create_model
from kangae.report.ideas import parse_targets


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_ideas_greedy_writes_grid_gif_pngs_and_metrics(mlp_run, tmp_path):
    out = tmp_path / "ideas"
    res = run("ideas", mlp_run, "--targets", "3,7", "--out", out, "--check-with", mlp_run)
    assert res.exit_code == 0, res.output
    assert {"grid.png", "search.gif", "metrics.json", "target-00-3.png", "target-01-7.png"} <= {
        p.name for p in out.iterdir()}
    assert Image.open(out / "search.gif").n_frames > 5
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["verification"]["prototypes"]
    assert [r["target"] for r in rows] == [3, 7]
    assert all(r["rank"] == 1 and r["probability"] > 0.99 for r in rows)
    assert all(r["transfer"] == [True] for r in rows)  # the same run reads them
    assert "rank" in res.output and "transfer" in res.output


@pytest.mark.parametrize("method,extra", [
    ("gradient", ["--steps", "40"]), ("mc", ["--steps", "300"]), ("template", []),
    ("block", ["--steps", "50"]),
])
def test_every_method_from_the_cli(mlp_run, tmp_path, method, extra):
    out = tmp_path / method
    res = run("ideas", mlp_run, "--method", method, "--targets", "0,1", "--out", out, *extra)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and len(metrics["targets"]) == 2
    if method == "template":
        assert metrics["label"] == "mean-gradient"  # the mlp is not linear, and says so


def test_layer_targets_make_a_4x4_filter_grid(blob_data, tmp_path):
    kangae.train("vgg-small", out=tmp_path / "v", epochs=1, batch_size=64, progress=False,
                 tensorboard=False, limit=128)
    out = tmp_path / "filters"
    res = run("ideas", tmp_path / "v", "--method", "gradient", "--targets", "layer:block1.relu2",
              "--steps", "10", "--out", out)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["targets"][15] == "block1.relu2:15"
    assert len(list(out.glob("target-*.png"))) == 16


@pytest.mark.parametrize("args,needle", [
    (["--targets", "3,12"], "valid: 0, 1, 2"),
    (["--targets", "layer:hiden"], "Did you mean 'hidden'"),
    (["--targets", "layer:hidden:0-999", "--method", "gradient"], "valid: 0-63"),
    (["--targets", "layer:hidden"], "need --method gradient"),
    (["--levels", "0,2"], "levels must lie in [0, 1]"),
    (["--method", "gradient", "--objective", "channel"], "does not fit class targets"),
    (["--method", "gradient", "--lr", "0"], "must be positive"),
    (["--method", "mc", "--steps", "0"], "must be at least 1"),
    (["--steps", "50"], "--steps applies to --method mc or block or gradient or dream, not greedy"),
    (["--method", "greedy", "--lr", "0.1"], "--lr applies to --method gradient or dream, not greedy"),
    (["--method", "gradient", "--patch", "4"], "--patch applies to --method greedy or mc or block"),
    (["--method", "dream", "--targets", "layer:hidden"], "needs a picture: --image FILE"),
    (["--image", "x.png"], "--image applies to --method dream, not greedy"),
    (["--method", "gradient", "--levels", "0,1"], "--levels applies to --method greedy or mc or block"),
    (["--method", "template", "--sweeps", "3"], "--sweeps applies to --method greedy, not template"),
])
def test_invalid_targets_and_options_exit_2(mlp_run, tmp_path, args, needle):
    res = run("ideas", mlp_run, "--out", tmp_path / "x", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_parse_targets_accepts_names_ranges_and_all():
    model = create_model("mlp")
    classes = list("abcdefghij")
    shape = (1, 28, 28)
    assert parse_targets("all", model, classes, shape).indices == list(range(10))
    assert parse_targets("b,3-5", model, classes, shape).indices == [1, 3, 4, 5]
    spec = parse_targets("layer:hidden:2,5", model, classes, shape)
    assert (spec.objective, spec.layer, spec.indices) == ("channel", "hidden", [2, 5])
    assert parse_targets("layer:hidden", model, classes, shape).indices == list(range(16))
    with pytest.raises(KangaeError, match="valid: a, b, c"):
        parse_targets("z", model, classes, shape)


def test_search_says_its_cost_before_it_starts(mlp_run, tmp_path):
    res = run("ideas", mlp_run, "--targets", "3", "--out", tmp_path / "x", "--sweeps", "2")
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith("search cost: 784 pixel values, 1,568 forward passes at "), first


def test_dream_of_a_users_picture_from_the_cli(mlp_run, tmp_path):
    import numpy as np

    picture = tmp_path / "my photo.png"
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(picture)  # colour, another size: made grey 28x28 for the model
    out = tmp_path / "dream"
    res = run("ideas", mlp_run, "--method", "dream", "--image", picture, "--targets", "layer:hidden",
              "--steps", "5", "--out", out)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "dream" and metrics["targets"] == ["my photo"]
    assert metrics["scores"][0] > metrics["run"]["start_norm"][0]
    assert (out / "target-00-my_photo.png").is_file() and (out / "search.gif").is_file()
    # one picture and three channels: three dreams, each raising its own channel the most
    res = run("ideas", mlp_run, "--method", "dream", "--image", picture, "--targets", "layer:hidden:0-2",
              "--steps", "5", "--out", tmp_path / "three")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "three" / "metrics.json").read_text())
    assert metrics["targets"] == ["my photo ch 0", "my photo ch 1", "my photo ch 2"]
    assert all(after > before for after, before in zip(metrics["scores"], metrics["run"]["start_norm"]))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a picture")
    res = run("ideas", mlp_run, "--method", "dream", "--image", bad, "--targets", "layer:hidden",
              "--out", out)
    assert res.exit_code == 2 and "broken.png" in res.output and "Traceback" not in res.output
