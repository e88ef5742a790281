"""Run under torchrun by test_distributed.py: train, then record this rank's weights."""

import hashlib
import json
import os
import sys

import torch

import kangae

out = sys.argv[1]
adversarial = dict(adversarial="fgsm-rs", eps=0.2, adversarial_options={"check_images": 65},
                   snapshots=False) if sys.argv[2:] == ["adversarial"] else {}
run = kangae.train("mlp", out=out, epochs=2, batch_size=32, lr=1e-3, progress=False,
                   tensorboard=False, **adversarial)
digest = hashlib.sha256()
for v in run.model.state_dict().values():
    digest.update(v.detach().cpu().contiguous().numpy().tobytes())
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"sha256": digest.hexdigest(), "world": torch.distributed.get_world_size(),
               "val_acc": run.history[-1]["val_acc"],
               "train_pgd_acc": [h.get("train_pgd_acc") for h in run.history]}, f)
torch.distributed.destroy_process_group()
