from pathlib import Path

import pytest

from kangae.errors import KangaeError, RunError
from kangae.training.folders import cached_run, start_or_resume


def _fake_run(out: Path, calls: list[Path]) -> None:
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.json").write_text('{"checkpoint": "epoch-0001"}')
    (out / "made").write_text(str(len(calls)))
    calls.append(out)


def test_a_cached_run_is_trained_once_and_again_only_when_stale(tmp_path):
    calls: list[Path] = []
    folder = tmp_path / "cache" / "judge"
    assert cached_run(folder, lambda out: _fake_run(out, calls)) == folder
    assert cached_run(folder, lambda out: _fake_run(out, calls)) == folder
    assert len(calls) == 1 and (folder / "made").read_text() == "0"
    cached_run(folder, lambda out: _fake_run(out, calls), is_current=lambda f: False)
    assert len(calls) == 2 and (folder / "made").read_text() == "1"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["judge"]  # no temporaries left


def test_a_failed_training_leaves_the_old_cache_whole(tmp_path):
    calls: list[Path] = []
    folder = tmp_path / "judge"
    cached_run(folder, lambda out: _fake_run(out, calls))

    def broken(out: Path) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_run(folder, broken, is_current=lambda f: False)
    assert (folder / "made").read_text() == "0"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["judge"]


def test_start_or_resume(tmp_path):
    assert start_or_resume(tmp_path / "new", resume=False) == (None, None)
    with pytest.raises(RunError, match="no such run folder"):
        start_or_resume(tmp_path / "missing", resume=True)
    (tmp_path / "old" / "checkpoints" / "epoch-0001").mkdir(parents=True)
    with pytest.raises(KangaeError, match="already holds a run; pass resume=True"):
        start_or_resume(tmp_path / "old", resume=False)
