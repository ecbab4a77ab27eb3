"""Run by tests/test_agem.py under torchrun: supclr_train_agem with a Brain that records, per
training step from task 1 on, the reference gradient's sum, the parameters' sum after the step and
(g . g_ref, projected g . g_ref, projected?), into <output_folder>/agem_rank<r>.json."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import run_recipe  # noqa: E402

from soundcl.methods.ssl.agem import SupCLRAGEM  # noqa: E402


class RecordingAGEM(SupCLRAGEM):
    records = []

    def optimizers_step(self):
        reference = self.reference_grad
        super().optimizers_step()
        if reference is not None:
            params = torch.cat([p.detach().reshape(-1) for p in self.agem_parameters()])
            self.records.append([float(reference.double().sum()), float(params.double().sum()),
                                 *self.last_projection])
            rank = torch.distributed.get_rank()
            with open(os.path.join(self.hparams.output_folder, f"agem_rank{rank}.json"), "w") as f:
                json.dump(self.records, f)


if __name__ == "__main__":
    run_recipe("supclr_train_agem", sys.argv[1:], replace={"SupCLRAGEM": RecordingAGEM})
