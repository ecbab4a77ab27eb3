"""Distributed training with torchrun (gloo on CPU) against a single process."""
import glob
import json
import os
import subprocess
import sys

import numpy as np

from conftest import REPO_ROOT, recipe_argv, run_torchrun

HPARAMS = "hparams/synth/sup_train.yaml"
# Per-process batch 8 on 2 processes = the single process's batch of 16.
COMMON = ["--task_classes=[[0,1],[2,3]]", "--number_of_epochs=4", "--replay_num_keep=8"]


def _matrix(path):
    rows = json.loads(open(path).read())["accuracy_matrix"]
    return np.array([[np.nan if v is None else v for v in row] for row in rows])


def test_two_processes_match_one_and_share_the_replay_memory(tmp_path, synth_data_folder):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"), OMP_NUM_THREADS="1")
    recipe = os.path.join(REPO_ROOT, "recipes", "sup_train.py")
    single = recipe_argv(HPARAMS, str(tmp_path), synth_data_folder, *COMMON, "--experiment_name=single")
    ddp = recipe_argv(
        HPARAMS, str(tmp_path), synth_data_folder, *COMMON, "--experiment_name=ddp",
        "--batch_size=8", "--distributed_backend=gloo",
    )
    done = subprocess.run([sys.executable, recipe, *single], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_torchrun("sup_train", ddp)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    one = _matrix(tmp_path / "single" / "1986" / "results.json")
    two = _matrix(tmp_path / "ddp" / "1986" / "results.json")
    # Not bit-identical (other batch composition, per-process BatchNorm
    # statistics), but the same learning: both learn each task, and each task's
    # own accuracy agrees within 0.25. (Old-task accuracy after 8 replayed clips
    # swings between 0 and 0.5 with the batch order alone on this miniature, in
    # one process too, so it is not compared.)
    assert np.nanmin(np.diag(two)) >= 0.6, two
    assert np.max(np.abs(np.diag(one) - np.diag(two))) <= 0.25, (one, two)

    # Both processes trained task 1 on the same replay memory.
    digests = [json.loads(open(p).read()) for p in sorted(glob.glob(str(tmp_path / "ddp/1986/save/task0/memory_rank*.json")))]
    assert [d["rank"] for d in digests] == [0, 1]
    assert digests[0]["sha1"] == digests[1]["sha1"] and digests[0]["n_clips"] == 8
    # Only the main process wrote results; the checkpoints are complete.
    assert (tmp_path / "ddp/1986/save/task1/CKPT+final/COMPLETE").exists()
