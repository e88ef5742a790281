import pytest
import torch

from kangae.utils.device import chunk_size


def test_cpu_chunks_keep_about_131k_input_values():
    assert chunk_size(None, "cpu") == 128  # MNIST digits
    assert chunk_size(None, torch.device("cpu"), (1, 56, 56)) == 32  # cluttered canvases
    assert chunk_size(None, "cpu", (3, 32, 32)) == 32
    assert chunk_size(None, "cpu", (1, 1024, 1024)) == 8  # never below 8
    assert chunk_size(None, "cpu", (1, 4, 4)) == 8192


def test_accelerators_take_large_chunks_and_an_explicit_size_wins():
    assert chunk_size(None, "cuda") == 1000 and chunk_size(None, "mps") == 1000
    assert chunk_size(7, "cpu") == 7
    with pytest.raises(ValueError, match="batch_size"):
        chunk_size(0, "cpu")
