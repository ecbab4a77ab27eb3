#!/usr/bin/env python3
"""Linear evaluation with cached embeddings vs re-encoding every epoch.

Trains a supervised encoder on the synthetic data (or reuses one), then runs
``recipes/linclf_train.py`` twice on the same checkpoints: ``cache_embeddings``
True (each clip encoded once per task) and False (the frozen encoder re-run on
every batch of every epoch, as published code did). Prints both wall times,
their ratio and both accuracy matrices.

    python bench/linear_eval.py --output_base=/tmp/bench_linear_eval
    python bench/linear_eval.py --ssl_checkpoints_dir=results/synth/sup_train_replay0/1986/save
    ... --number_of_epochs=30 --linclf_train_type=seen --extra="--task_classes=[[3,8],[9,4]]"
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "modules"))

from soundcl.metrics import format_matrix_table  # noqa: E402


def run_recipe(name, argv):
    """Run ``recipes/<name>.py`` in-process on ``argv`` (as its command line would); returns its results."""
    import runpy

    script = os.path.join(REPO_ROOT, "recipes", f"{name}.py")
    return runpy.run_path(script, run_name=f"bench_{name}")["main"](list(argv))


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]], dtype=float)


def main_bench():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_base", default="results/bench_linear_eval")
    parser.add_argument("--ssl_checkpoints_dir", default=None, help="reuse this encoder run's save/ folder")
    parser.add_argument("--number_of_epochs", type=int, default=30)
    parser.add_argument("--linclf_train_type", default="seen")
    parser.add_argument("--extra", default="", help="more recipe overrides, space separated")
    args = parser.parse_args()

    base = os.path.abspath(args.output_base)
    common = [f"--output_base={base}", "--noprogressbar", *args.extra.split()]
    ckpts = args.ssl_checkpoints_dir
    if ckpts is None:
        start = time.time()
        run_recipe("sup_train", [os.path.join(REPO_ROOT, "hparams/synth/sup_train.yaml"), *common, "--experiment_name=encoder"])
        print(f"encoder trained in {time.time() - start:.1f} s")
        ckpts = os.path.join(base, "encoder", "1986", "save")

    runs = {}
    for cache in (True, False):
        name = f"linclf_{args.linclf_train_type}_cache{cache}"
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)  # time a fresh run, not a resume
        start = time.time()
        results = run_recipe(
            "linclf_train",
            [
                os.path.join(REPO_ROOT, "hparams/synth/linclf_train.yaml"), *common,
                f"--ssl_checkpoints_dir={ckpts}", f"--experiment_name={name}",
                f"--linclf_train_type={args.linclf_train_type}", f"--number_of_epochs={args.number_of_epochs}",
                f"--cache_embeddings={cache}",
            ],
        )
        runs[cache] = (time.time() - start, results)

    print(f"\n== linear evaluation ({args.linclf_train_type}, {args.number_of_epochs} epochs per task) ==")
    for cache, (wall, results) in runs.items():
        label = "cached embeddings" if cache else "re-encoding every epoch"
        print(f"\n{label}: {wall:.1f} s wall")
        print(format_matrix_table(_matrix(results), results))
    cached, reencoded = runs[True][0], runs[False][0]
    same = np.allclose(_matrix(runs[True][1]), _matrix(runs[False][1]), equal_nan=True)
    print(f"\nspeed-up of the cache: {reencoded / cached:.1f}x ({reencoded:.1f} s / {cached:.1f} s); "
          f"matrices {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main_bench()
