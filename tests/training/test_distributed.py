import json
import subprocess
import sys
from pathlib import Path

import pytest

import kangae


@pytest.mark.parametrize("adversarial", [False, True])
def test_two_process_data_parallel_training_agrees(blob_data, tmp_path, adversarial):
    out = tmp_path / "ddp"
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(worker), str(out), *(["adversarial"] if adversarial else [])],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                          "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["sha256"] == ranks[1]["sha256"], "replicas must hold the same weights"
    assert ranks[0]["val_acc"] > 0.9
    # The overfitting check splits its 65 images over the ranks and sums the counts: every
    # rank reads the same accuracy, so all stop (or go on) together.
    assert ranks[0]["train_pgd_acc"] == ranks[1]["train_pgd_acc"]
    if adversarial:
        assert all(abs(a * 65 - round(a * 65)) < 1e-9 for a in ranks[0]["train_pgd_acc"])
    # rank 0 wrote one run folder; each rank saw half of every epoch
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]  # 640 / 2 ranks / 32
    assert kangae.load(out).evaluate()["accuracy"] == ranks[0]["val_acc"]
