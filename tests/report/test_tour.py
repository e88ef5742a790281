import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kangae.cli import cli
from kangae.report import tour as tour_mod
from kangae.report.tour import STEPS, Settings, run_tour

TINY = Settings(quick=True, main_epochs=1, mlp_epochs=1, softmax_epochs=1, explain_images=2,
                mask_steps=10, bench_n=6, bench_pointing=10, bench_sanity=2, bench_mask_steps=5,
                bench_robust=2, rise_masks=100,
                cluttered_epochs=1, greedy_sweeps=1, attack_n=40, pgd_steps=2, edit_images=2, gan_epochs=1,
                gan_limit=320)


@pytest.fixture(scope="module")
def tiny_tour(tmp_path_factory, blob_root):
    """One tiny tour on the synthetic digits, shared by the tests below."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KANGAE_DATA", str(blob_root))
    mp.setenv("KANGAE_OFFLINE", "1")
    mp.setenv("KANGAE_CACHE", str(tmp_path_factory.mktemp("cache")))
    out = tmp_path_factory.mktemp("tour")
    lines: list[str] = []
    res = run_tour(out, settings=TINY, log=lines.append, progress=False)
    yield out, res, lines
    mp.undo()


def test_every_step_runs_and_the_page_is_self_contained(tiny_tour):
    out, res, lines = tiny_tour
    assert res["failed"] == [], "\n".join(lines)
    assert sum(bool(re.match(r"\[\w+\] threads: \d+ of \d+ CPUs", line)) for line in lines) == len(STEPS)
    page = (out / "report.html").read_text()
    for _, title, _ in STEPS:
        assert title.replace("'", "&#39;") in page
    assert "quick mode" in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing to fetch
    data = json.loads((out / "report.json").read_text())
    assert set(data["steps"]) == {name for name, _, _ in STEPS}
    faith = data["steps"]["faithfulness"]["numbers"]
    assert 0 <= faith["methods"]["mask"]["deletion"][0] <= 1
    from kangae.probes.registry import explainers

    shown = [m for m, spec in explainers().items() if not spec.baseline]
    assert set(faith["methods"]) == set(explainers())  # the table has every method
    assert data["steps"]["explain"]["numbers"]["methods"] == ["input", *shown]
    assert all(f"explain/methods/{m}.png" in data["steps"]["explain"]["files"] for m in shown)
    assert "ROAD MoRF" in page and "center (baseline)" in page and "cascading randomization" in page
    info = json.loads((out / "tour.json").read_text())
    assert info["serve_run"] == "runs/main" and (out / info["prototypes"]).is_file()


def test_a_rerun_skips_finished_steps_and_a_failing_step_spares_the_rest(tiny_tour, monkeypatch, tmp_path):
    out, _, _ = tiny_tour
    copy = tmp_path / "tour"
    shutil.copytree(out, copy)
    (copy / "steps" / "calibration.json").unlink()

    def broken(tour, folder):
        raise RuntimeError("the calibration step broke")

    steps = [(n, t, broken if n == "calibration" else f) for n, t, f in STEPS]
    monkeypatch.setattr(tour_mod, "STEPS", steps)
    lines: list[str] = []
    res = run_tour(copy, settings=TINY, log=lines.append, progress=False)
    assert res["failed"] == ["calibration"]
    assert sum("skipped" in line for line in lines) == len(STEPS) - 1
    page = (copy / "report.html").read_text()
    assert "This step failed" in page and "the calibration step broke" in page
    assert "Where does it look?" in page


def test_cli_rejects_unknown_steps():
    r = CliRunner().invoke(cli, ["tour", "--only", "ideas,nightmares"])
    assert r.exit_code == 2 and "unknown step nightmares" in r.output


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed")
def test_report_opens_from_disk_with_every_image_and_no_requests(tiny_tour):
    from playwright.sync_api import sync_playwright

    out, _, _ = tiny_tour
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((out / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        browser.close()
    assert widths and all(w > 0 for w in widths)
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert errors == []
