"""A-GEM for SupCLR (soundcl.methods.ssl.agem, recipes/supclr_train_agem.py)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, recipe_argv
from soundcl.methods.ssl.agem import AGEMMemory, AGEMTaskData, project_gradient
from soundcl.base.contract import ConfigError

HPARAMS = "hparams/synth/supclr_train_agem.yaml"
TINY = ["--task_classes=[[0,1],[2,3]]", "--train_folds=[1,2,3]", "--number_of_epochs=1", "--replay_num_keep=8",
        "--warmup_epochs=0",
        "--train_duration=0.5", "--knn_k=5"]


def _argv(output_base, data_folder, *extra):
    argv = recipe_argv(HPARAMS, str(output_base), data_folder, *TINY, *extra)
    return [a for a in argv if not a.startswith(("--lr=", "--lr_final="))]  # supervised tiny options


def test_projection_removes_the_conflict_and_leaves_agreeing_gradients_alone():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        grad, reference = torch.randn(2, 100, generator=generator, dtype=torch.float64)
        projected, changed = project_gradient(grad, reference)
        dot = float(grad @ reference)
        assert changed == (dot < 0)
        if dot >= 0:
            assert torch.equal(projected, grad)
        else:
            assert float(projected @ reference) == pytest.approx(0.0, abs=1e-9)
            # The smallest change: only the component along the reference is removed.
            assert torch.allclose(grad - projected, (dot / float(reference @ reference)) * reference)
    grad = torch.tensor([1.0, -1.0])
    projected, changed = project_gradient(grad, torch.tensor([0.0, 1.0]))
    assert changed and projected.tolist() == [1.0, 0.0]


def test_task_data_trains_on_the_current_task_and_keeps_the_memory_apart():
    rows = {split: [[{"ID": f"{split}{k}_{i}", "class_idx": k} for i in range(4)] for k in range(2)]
            for split in ("train", "valid", "test")}
    data = AGEMTaskData().select(1, ["train0_1", "train0_3"], rows, seed=1)
    assert [r["ID"] for r in data.train] == [f"train1_{i}" for i in range(4)]
    assert [r["ID"] for r in data.memory] == ["train0_1", "train0_3"]
    assert data.test_tasks == [0, 1]


def test_mixup_and_an_empty_memory_are_refused():
    with pytest.raises(ConfigError, match="use_mixup"):
        AGEMMemory.from_hparams({"use_mixup": True, "replay_num_keep": 8})
    with pytest.raises(ConfigError, match="replay_num_keep=0"):
        AGEMMemory.from_hparams({"use_mixup": False, "replay_num_keep": 0})
    assert AGEMMemory.from_hparams({"use_mixup": False, "replay_num_keep": "all"}).num_keep is None


def test_two_processes_project_against_the_shared_reference_gradient(tmp_path, synth_data_folder):
    """torchrun, 2 gloo processes, task 1 (A-GEM steps): every step moves along the memory gradient
    (projected when in conflict, never against it), and the reference gradient and the weights
    after each step are the same on both processes (gradients all-reduced before the projection)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"), OMP_NUM_THREADS="1")
    argv = _argv(tmp_path, synth_data_folder, "--batch_size=8", "--number_of_epochs=2",
                 "--distributed_backend=gloo", "--experiment_name=ddp")
    worker = os.path.join(REPO_ROOT, "tests", "agem_ddp_worker.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*torchrun, worker, *argv], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    folder = tmp_path / "ddp" / "1986"
    ranks = [json.loads((folder / f"agem_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] and len(ranks[0]) == len(ranks[1])
    for _, _, dot, projected_dot, projected in ranks[0]:
        assert projected == (dot < 0)
        assert projected_dot >= -1e-6 * max(1.0, abs(dot)), ranks[0]  # never against the reference
    assert any(step[4] for step in ranks[0]), ranks[0]  # the run met a conflict
    flat = [[float(value) for step in rank for value in step] for rank in ranks]
    assert flat[0] == pytest.approx(flat[1], rel=1e-6, abs=1e-6)
    assert (folder / "results.json").exists()
