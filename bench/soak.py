#!/usr/bin/env python3
"""Interruption soak: SIGKILL a recipe at random moments, restart it, compare.

Runs a synthetic 3-task replay recipe once uninterrupted, then again under
fire: each attempt is killed with SIGKILL after a random delay (so kills land
during data preparation, mid-epoch, while checkpoints or the memory are being
written ...) and restarted with the same command, until the run completes.
The final accuracy matrix and replay memory must equal the uninterrupted ones.

    python bench/soak.py --kills 20
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO_ROOT, "recipes", "sup_train.py")
HPARAMS = os.path.join(REPO_ROOT, "hparams", "synth", "sup_train.yaml")
TINY = [
    "--task_classes=[[0,1],[2,3],[4,5]]", "--encoder_channels=[8,16]", "--emb_dim=32", "--n_mels=32",
    "--number_of_epochs=3", "--lr=0.005", "--lr_final=0.001", "--batch_size=16", "--replay_num_keep=8",
    "--clips_per_class_per_fold=3", "--noprogressbar",
]


def _command(work, name):
    return [
        sys.executable, RECIPE, HPARAMS, f"--output_base={work}", f"--data_folder={work}/synth_data",
        f"--audio_cache={work}/cache_{name}", f"--experiment_name={name}", *TINY,
    ]


def _outcome(work, name):
    out = os.path.join(work, name, "1986")
    results = json.load(open(os.path.join(out, "results.json")))
    memories = [
        json.load(open(os.path.join(out, "save", f"task{k}", "task_state.json")))["memory"] for k in range(3)
    ]
    return results["accuracy_matrix"], memories


def soak(n_kills, seed=0, work=None, log=print):
    """Returns a dict: kills made, restarts, whether results were identical."""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"))
    own_work = work is None
    work = work or tempfile.mkdtemp(prefix="soak_")
    rng = random.Random(seed)
    try:
        start = time.time()
        # Kill the very first run too: data generation and preparation must survive it.
        subprocess.run(_command(work, "reference"), env=env, check=True, capture_output=True)
        reference_time = time.time() - start
        log(f"uninterrupted run: {reference_time:.1f} s")

        kills, attempts = 0, 0
        while True:
            attempts += 1
            proc = subprocess.Popen(_command(work, "soaked"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            delay = rng.uniform(0.2, reference_time) if kills < n_kills else None
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                log(f"kill {kills}/{n_kills} after {delay:.1f} s")
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"attempt {attempts} failed with exit code {proc.returncode}")
            break
        reference, soaked = _outcome(work, "reference"), _outcome(work, "soaked")
        return {
            "kills": kills,
            "attempts": attempts,
            "recovered": True,
            "identical_matrix": reference[0] == soaked[0],
            "identical_memory": reference[1] == soaked[1],
            "reference_time_s": reference_time,
        }
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = soak(args.kills, args.seed)
    print(json.dumps(summary, indent=2))
    sys.exit(0 if summary["identical_matrix"] and summary["identical_memory"] else 1)


if __name__ == "__main__":
    main()
