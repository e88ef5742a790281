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
