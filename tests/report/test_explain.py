import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from kangae.cli import cli


def _kangae(*args: str):
    return CliRunner().invoke(cli, list(args))


def _drawing(path, dark_on_light: bool = True) -> None:
    a = np.zeros((120, 90), np.uint8)
    a[20:100, 40:52] = 255  # a thick "1"
    if dark_on_light:
        a = 255 - a
    Image.fromarray(a, "L").save(path)


def test_explain_files_writes_panels_and_says_it_inverted(mlp_run, tmp_path):
    img = tmp_path / "my drawing.png"
    _drawing(img)
    out = tmp_path / "ex"
    r = _kangae("explain", str(mlp_run), str(img), "--method", "saliency", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "inverted" in r.output and "my drawing.png: " in r.output
    res = json.loads((out / "explanations.json").read_text())
    entry = res["images"][0]
    assert entry["inverted"] is True and entry["source"] == str(img)
    for name in entry["files"]:
        assert (out / name).is_file()
    seen = np.asarray(Image.open(out / entry["files"][1]))
    assert seen.shape[:2] == (28, 28) and seen.max() > 200  # white ink on black, as MNIST


def test_a_bad_file_is_reported_and_the_good_ones_still_explained(mlp_run, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    _drawing(good)
    bad.write_bytes(b"\x89PNG junk")
    out = tmp_path / "ex"
    r = _kangae("explain", str(mlp_run), str(bad), str(good), "--method", "mask", "--steps", "5",
                "--out", str(out))
    assert r.exit_code == 2
    assert "bad.png: not a readable image" in r.output and "Traceback" not in r.output
    res = json.loads((out / "explanations.json").read_text())
    assert [e["source"] for e in res["images"]] == [str(good)]
    assert "after deleting" in res["images"][0]["summary"]


USAGE_ERRORS = [
    (["--target", "11"], "invalid target '11'"),
    (["--method", "salency"], "Invalid value for '--method'"),
    (["--method", "extremal", "--areas", "0.1,2"], "between 0 and 1"),
    (["--method", "saliency", "--steps", "3"], "--steps applies"),
    (["--method", "gradcam"], "needs a convolutional layer"),
    ([], "give image files"),
]


def test_usage_errors_exit_2_with_a_message(mlp_run, tmp_path):
    for args, message in USAGE_ERRORS:
        test = ["--test", "2"] if args else []
        r = _kangae("explain", str(mlp_run), *test, "--out", str(tmp_path / "x"), *args)
        assert r.exit_code == 2 and message in r.output, (args, r.output)
        assert "Traceback" not in r.output


def test_explain_bench_writes_a_table_with_the_goals(mlp_run, tmp_path):
    out = tmp_path / "bench"
    r = _kangae("explain-bench", str(mlp_run), "--methods", "saliency,mask,random", "--n", "12",
                "--sanity", "4", "--robust", "2", "--mask-steps", "40", "--pointing", "0", "--out", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads((out / "bench.json").read_text())
    assert set(res["methods"]) == {"saliency", "mask", "random"}
    for row in res["methods"].values():
        mean, se = row["deletion"]
        assert 0 <= mean <= 1 and se >= 0
    # on the blobs the mask's deletion is far better than random order
    assert res["methods"]["mask"]["deletion"][0] < res["methods"]["random"]["deletion"][0]
    assert "| mask |" in (out / "bench.md").read_text()


def test_bench_carries_every_metric_and_counts_degenerate_maps(mlp_run, tmp_path):
    """A method whose maps are all zero is counted as degenerate and never averaged in."""
    import math

    import torch

    from kangae.probes import registry
    from kangae.report.explain import explain_bench
    from kangae.training.run import load

    @registry.register_explainer("blank-test", gradient=False, description="all zero")
    def _blank(model, x, t, ctx, **_):
        return torch.zeros_like(x)

    try:
        res = explain_bench(load(mlp_run), tmp_path / "b", ["saliency", "blank-test"], n=6, n_pointing=0,
                            n_sanity=3, n_robust=2)
    finally:
        registry._REGISTRY.pop("blank-test")
    sal, blank = res["methods"]["saliency"], res["methods"]["blank-test"]
    for key in ("deletion", "insertion", "road_morf", "road_lerf", "infidelity", "sparseness", "complexity"):
        mean, se = sal[key]
        assert math.isfinite(mean) and se >= 0 and sal["n"][key] == 6, key
        assert math.isnan(blank[key][0]) and blank["n"][key] == 0, key
    for key in ("max_sensitivity",):
        assert sal["n"][key] == 2
    for key in ("sanity_spearman", "sanity_ssim", "random_logit_ssim", "random_logit_spearman"):
        assert sal["n"][key] == 3 and math.isfinite(sal[key][0]), key
    assert sal["degenerate"] == 0 and blank["degenerate"] == 6 and blank["images"] == 6
    c = sal["cascade"]
    assert c["layers"] == ["logits", "hidden"] and len(c["spearman"]) == len(c["ssim"]) == 2
    assert c["spearman"][-1] == sal["sanity_spearman"]
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "| blank-test | 6 | 6 | - |" in md and "ROAD MoRF" in md and "random-logit SSIM" in md
    assert (tmp_path / "b" / "cascade.png").is_file()
    # strict JSON (no bare NaN: the blank method's means are null), and no goal about what did
    # not run: neither the mask nor the pointing game
    def refuse(constant):
        raise AssertionError(f"bare {constant} in bench.json")

    saved = json.loads((tmp_path / "b" / "bench.json").read_text(), parse_constant=refuse)
    assert saved["methods"]["blank-test"]["deletion"][0] is None
    assert saved["goals"] == {"mask_deletion_beats_saliency": None, "mask_deletion_beats_random": None,
                              "best_pointing": None}
    assert "mask deletion AUC" not in md and "pointing game:" not in md


def test_pointing_game_with_a_given_cluttered_run(blob_data, mlp_run, tmp_path):
    import kangae

    clut = tmp_path / "clut"
    kangae.train("global-cnn", "cluttered-mnist", out=clut, epochs=1, batch_size=32, progress=False,
                 tensorboard=False, snapshots=False, limit=320, model_args={"width": 8})
    out = tmp_path / "bench"
    r = _kangae("explain-bench", str(mlp_run), "--methods", "saliency,random", "--n", "4",
                "--sanity", "2", "--pointing", "40", "--cluttered-run", str(clut), "--out", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads((out / "bench.json").read_text())
    rows = res["methods"]
    rate, se = rows["random"]["pointing"]
    assert 0 <= rate < 0.5  # a random maximum rarely lands in a digit's box
    centre = res["pointing_baselines"]["center"]
    assert 0 <= centre["pointing"][0] <= 1 and centre["n"]["pointing"] == 40
    assert rows["random"]["n"]["pointing_difficult"] == res["n_difficult"]
    assert rows["random"]["n"]["deletion"] == 4  # the pointing counts join the others
    csv = (out / "pointing.csv").read_text().splitlines()
    assert csv[0] == "method,all,difficult"
    assert [r.split(",")[0] for r in csv[1:]] == ["center", "saliency", "random"]
    assert float(csv[3].split(",")[1]) == round(100 * rate, 1)


def test_a_cluttered_run_that_is_not_one_is_a_clear_line(blob_data, mlp_run, tmp_path):
    r = _kangae("explain-bench", str(mlp_run), "--methods", "saliency", "--n", "4", "--sanity", "2",
                "--pointing", "5", "--cluttered-run", str(mlp_run), "--out", str(tmp_path / "b"))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "takes [1, 28, 28] pictures, not the [1, 56, 56] cluttered-MNIST canvases" in r.output


def test_explain_says_why_a_mask_did_not_move(mlp_run, tmp_path):
    import torch

    from kangae.report.explain import test_images
    from kangae.training.run import load

    run = load(mlp_run)
    x, _ = test_images(run, 2)
    with torch.no_grad():
        p = torch.softmax(run.model(x), 1)
    target = int(p[0].argmin())  # a class the model gives far under 1% on image 0
    assert float(p[0, target]) < 0.01
    out = tmp_path / "ex"
    r = _kangae("explain", str(mlp_run), "--test", "2", "--method", "mask", "--steps", "5",
                "--target", str(target), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "test-0-label-" in r.output and "warning: the mask did not move" in r.output
    entry = json.loads((out / "explanations.json").read_text())["images"][0]
    assert "already under the deletion game's line" in entry["warning"]


def test_explain_bench_scores_a_short_list_unless_asked_for_all(mlp_run, tmp_path, monkeypatch):
    """The default is one method of each family and the random baseline; 'all' is every one."""
    from kangae.cli.explain import QUICK_BENCH_METHODS
    from kangae.probes.attribution import METHODS
    from kangae.report import explain as report

    asked = []

    def fake_bench(run, out, methods, **_):
        asked.append(list(methods))
        return {"methods": {}}

    monkeypatch.setattr(report, "explain_bench", fake_bench)
    monkeypatch.setattr(report, "markdown_table", lambda res: "table")
    for extra in ([], ["--methods", "all"], ["--methods", "saliency, mask"]):
        r = _kangae("explain-bench", str(mlp_run), "--pointing", "0", "--out", str(tmp_path / "b"), *extra)
        assert r.exit_code == 0, r.output
    assert asked == [list(QUICK_BENCH_METHODS), list(METHODS), ["saliency", "mask"]]
    assert len(METHODS) == 18 and set(QUICK_BENCH_METHODS) < set(METHODS)
    help_text = " ".join(_kangae("explain-bench", "--help").output.split())
    assert "'all' for every one of the 18" in help_text
    assert "[default: saliency,ig,gradcam,rise,mask,random]" in help_text


def test_explain_bench_needs_a_method(mlp_run, tmp_path):
    r = _kangae("explain-bench", str(mlp_run), "--methods", " , ", "--out", str(tmp_path / "b"))
    assert r.exit_code == 2 and "give at least one method" in r.output and not (tmp_path / "b").exists()
