import subprocess
import sys
import time

import pytest
import torch

from kangae.utils import threads
from kangae.utils.threads import apply_threads, busy_elsewhere, choose_threads


def test_a_core_taken_by_another_program_is_left_to_it():
    assert choose_threads(cpus=2, busy=0.0).threads == 2
    assert choose_threads(cpus=2, busy=0.4).threads == 2  # under half a core: still ours
    assert choose_threads(cpus=2, busy=0.9).threads == 1
    assert choose_threads(cpus=8, busy=2.6).threads == 5
    assert choose_threads(cpus=2, busy=7.0).threads == 1  # never below one


def test_an_explicit_count_wins_and_is_checked():
    choice = choose_threads(3, cpus=2, busy=2.0)
    assert choice.threads == 3 and choice.explicit and "--threads" in choice.describe()
    with pytest.raises(ValueError, match="at least 1"):
        choose_threads(0)
    assert "of 2 CPUs (other programs keep 1.0 busy)" in choose_threads(cpus=2, busy=1.0).describe()


def test_busy_elsewhere_sees_another_process_and_not_our_own_work():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_elsewhere(0.3) > 0.6  # the other program keeps about one core busy
    finally:
        spinner.kill()
        spinner.wait()


def test_without_proc_the_load_average_is_used(monkeypatch):
    monkeypatch.setattr(threads, "_proc_stat", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.7, 0.0, 0.0))
    assert busy_elsewhere() == 1.7


def test_apply_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1).threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_busy_machine_gets_one_worker_per_cpu_and_a_quiet_or_explicit_one_does_not():
    assert choose_threads(cpus=2, busy=0.9).workers == 2  # one intra-op thread, two pieces at once
    assert choose_threads(cpus=2, busy=0.0).workers == 1  # quiet: intra-op threads do it
    assert choose_threads(1, cpus=2, busy=0.9).workers == 1  # --threads 1 means one core
    assert choose_threads(cpus=1, busy=0.0).workers == 1
    assert "independent pieces of work on 2 threads" in choose_threads(cpus=2, busy=0.9).describe()


@pytest.fixture
def two_workers():
    before, old = torch.get_num_threads(), threads.set_workers(2)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        threads.set_workers(old)


def test_pieces_are_cut_finer_only_with_several_workers(two_workers):
    assert threads.workers() == 2
    assert threads.pieces(64, 128) == [slice(0, 32), slice(32, 64)]
    assert threads.pieces(400, 128) == [slice(i, i + 50) for i in range(0, 400, 50)]  # 4 a worker
    assert threads.pieces(20, 128) == [slice(0, 20)]  # never under 32 images a piece
    assert threads.pieces(64, 128, smallest=16) == [slice(i, i + 16) for i in range(0, 64, 16)]
    torch.set_num_threads(2)  # intra-op threads: no workers on top of them
    assert threads.workers() == 1 and threads.pieces(64, 128) == [slice(0, 64)]


def test_map_pieces_runs_on_several_threads_in_order_and_raises(two_workers):
    import threading

    names = set()

    def work(part):
        names.add(threading.current_thread().name)
        time.sleep(0.01)
        return part.start

    parts = threads.pieces(64, 128, smallest=16)
    assert threads.map_pieces(work, parts) == [0, 16, 32, 48]
    assert len(names) == 2 and all(n.startswith("kangae-piece") for n in names)

    def fail(part):
        if part.start == 32:
            raise ValueError("piece 32")
        return part.start

    with pytest.raises(ValueError, match="piece 32"):
        threads.map_pieces(fail, parts)
    with pytest.raises(ValueError, match="at least 1"):
        threads.set_workers(0)


def test_pgd_in_pieces_on_two_workers_equals_one_batch(two_workers):
    from torch import nn

    from kangae.probes import pgd

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 13 * 13, 10)).eval()
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 10
    pieces_run = pgd(model, x, y, 0.2, steps=5, seed=3, restarts=2)
    threads.set_workers(1)
    whole = pgd(model, x, y, 0.2, steps=5, seed=3, restarts=2)
    torch.testing.assert_close(pieces_run.images, whole.images)
    assert torch.equal(pieces_run.success, whole.success) and 0 < float(whole.success.float().mean())


def test_a_command_leaves_the_workers_as_it_found_them(monkeypatch):
    from click.testing import CliRunner

    from kangae.cli import cli

    monkeypatch.setattr(threads, "busy_elsewhere", lambda window=0.1: 1.0)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    before = torch.get_num_threads()
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    assert threads._workers == 1 and torch.get_num_threads() == before


def test_masks_in_pieces_on_two_workers_equal_one_batch(two_workers):
    from torch import nn

    from kangae.probes import explain

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(6 * 13 * 13, 10))
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 10
    assert len(threads.pieces(40, 128, "cpu", 16)) == 3 and len(threads.pieces(40, 128, "meta", 16)) == 1
    got = {m: explain(model, x, y, method=m, steps=4) for m in ("mask", "extremal")}  # extremal: 2 pieces
    threads.set_workers(1)
    for m, e in got.items():
        want = explain(model, x, y, method=m, steps=4)
        torch.testing.assert_close(e.mask, want.mask, atol=1e-5, rtol=0)
        torch.testing.assert_close(e.prob_after, want.prob_after, atol=1e-5, rtol=0)
