#!/usr/bin/env python3
"""Linear evaluation with cached embeddings vs re-encoding every epoch.

Trains a supervised encoder on the synthetic data (5 tasks; by default the
published linear-evaluation encoder, CNN14 with 2048-d embeddings, trained one
epoch per task: its weights do not change what is timed), or reuses one, then
runs ``recipes/linclf_train.py`` twice on the same checkpoints:
``cache_embeddings`` True (each clip encoded once per task) and False (the
frozen encoder re-run on every batch of every epoch, as published code did).

What is timed is what differs: the linear evaluation of every task, i.e. per
task the embedding pass (cached run only), the training epochs and the tests,
as ``results.json`` records them (``prepare_time_s + train_time_s +
test_time_s``). The recipe's start-up (data preparation, the audio-cache fill
that the first of the two runs would otherwise pay alone) is outside: the audio
cache is filled before either run. Wall times are printed too.

The ratio is reported for ``--number_of_epochs`` (default 30, the recipe's
default). Re-encoding 30 epochs of 5 tasks with CNN14 takes about an hour on a
small CPU, so by default both runs are measured with ``--measure_epochs=2`` and
extrapolated to ``--number_of_epochs``: the measured training time of each task
(``train_time_s``, all epochs) is scaled by ``number_of_epochs /
measure_epochs``, the embedding pass and the tests are kept as measured. The
output says when a figure is extrapolated. ``--measure_epochs=30`` runs in full.

    PYTHONPATH=modules python bench/linear_eval.py --output_base=/tmp/bench_linear_eval
    PYTHONPATH=modules python bench/linear_eval.py --measure_epochs=30            # no extrapolation
    PYTHONPATH=modules python bench/linear_eval.py --encoder=synth                 # the synth YAML's small CNN
    PYTHONPATH=modules python bench/linear_eval.py --ssl_checkpoints_dir=results/synth/sup_train_replay0/1986/save
    ... --number_of_epochs=10 --extra="--task_classes=[[3,8],[9,4]]"       # 2 tasks (overrides of both recipes)

Measured numbers: bench/README.md.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "modules"))

from soundcl.results.metrics import format_matrix_table  # noqa: E402


def run_recipe(name, argv):
    """Run ``recipes/<name>.py`` in-process on ``argv``; returns its results."""
    import runpy

    script = os.path.join(REPO_ROOT, "recipes", f"{name}.py")
    return runpy.run_path(script, run_name=f"bench_{name}")["main"](list(argv))


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]], dtype=float)


#: Encoders of the bench: overrides of both recipes.
ENCODERS = {
    "cnn14": ["--encoder_channels=[64,128,256,512,1024,2048]", "--emb_dim=2048", "--n_mels=64"],
    "synth": [],  # the synth YAMLs' own small CNN
}


def linear_eval_s(per_task):
    """Seconds of the linear evaluation: embedding pass, training epochs and tests of every task."""
    return sum(t["prepare_time_s"] + t["train_time_s"] + t["test_time_s"] for t in per_task)


def extrapolate(per_task, measured_epochs, epochs):
    """Linear-evaluation seconds with ``epochs`` epochs per task, from a run with ``measured_epochs``.

    ``per_task``: the ``per_task`` entries of results.json (``train_time_s`` = all
    epochs of that task). Only the training time scales with the epochs.
    """
    train = sum(t["train_time_s"] for t in per_task)
    return linear_eval_s(per_task) - train + train * epochs / measured_epochs


def main_bench(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_base", default="results/bench_linear_eval")
    parser.add_argument("--ssl_checkpoints_dir", default=None, help="reuse this encoder run's save/ folder")
    parser.add_argument("--number_of_epochs", type=int, default=30, help="epochs per task the ratio is reported for")
    parser.add_argument("--measure_epochs", type=int, default=2,
                        help="epochs per task actually run; fewer than number_of_epochs: extrapolated")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="cnn14")
    parser.add_argument("--linclf_train_type", default="seen")
    parser.add_argument("--extra", default="", help="overrides of both recipes (encoder and linear), space separated")
    parser.add_argument("--encoder_extra", default="",
                        help="overrides of the encoder recipe only, space separated (default adds --number_of_epochs=1)")
    args = parser.parse_args(argv)
    measured_epochs = args.measure_epochs
    if not 0 < measured_epochs <= args.number_of_epochs:
        parser.error("need 0 < measure_epochs <= number_of_epochs")

    base = os.path.abspath(args.output_base)
    common = [f"--output_base={base}", "--noprogressbar", *ENCODERS[args.encoder], *args.extra.split()]
    ckpts = args.ssl_checkpoints_dir
    if ckpts is None:
        start = time.time()
        encoder_extra = args.encoder_extra.split()
        if not any(o.startswith("--number_of_epochs") for o in encoder_extra):
            encoder_extra.append("--number_of_epochs=1")
        run_recipe("sup_train", [os.path.join(REPO_ROOT, "hparams/synth/sup_train.yaml"), *common,
                                 *encoder_extra, "--experiment_name=encoder"])
        print(f"encoder trained in {time.time() - start:.1f} s")
        ckpts = os.path.join(base, "encoder", "1986", "save")

    runs = {}
    for cache in (False, True):  # the first run fills the audio cache before its timed part starts
        name = f"linclf_{args.linclf_train_type}_cache{cache}"
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)  # time a fresh run, not a resume
        start = time.time()
        results = run_recipe(
            "linclf_train",
            [
                os.path.join(REPO_ROOT, "hparams/synth/linclf_train.yaml"), *common,
                f"--ssl_checkpoints_dir={ckpts}", f"--experiment_name={name}",
                f"--linclf_train_type={args.linclf_train_type}", f"--number_of_epochs={measured_epochs}",
                f"--cache_embeddings={cache}",
            ],
        )
        runs[cache] = (time.time() - start, results)

    n_tasks = len(runs[True][1]["per_task"])
    print(f"\n== linear evaluation ({args.linclf_train_type}, {n_tasks} tasks, {measured_epochs} epochs per task, "
          f"encoder {args.encoder}) ==")
    timed = {}
    for cache in (True, False):
        wall, results = runs[cache]
        per_task = results["per_task"]
        label = "cached embeddings" if cache else "re-encoding every epoch"
        prepare = sum(t["prepare_time_s"] for t in per_task)
        train = sum(t["train_time_s"] for t in per_task)
        test = sum(t["test_time_s"] for t in per_task)
        timed[cache] = linear_eval_s(per_task)
        print(f"\n{label}: linear evaluation {timed[cache]:.1f} s (embedding pass {prepare:.1f} s, training "
              f"{train:.1f} s = {train / (n_tasks * measured_epochs):.2f} s per task-epoch, tests {test:.1f} s); "
              f"recipe wall {wall:.1f} s")
        print(format_matrix_table(_matrix(results), results))
    cached, reencoded = timed[True], timed[False]
    same = bool(np.allclose(_matrix(runs[True][1]), _matrix(runs[False][1]), equal_nan=True))
    summary = {
        "n_tasks": n_tasks,
        "encoder": args.encoder,
        "identical": same,
        "measured": {"epochs": measured_epochs, "cached_s": cached, "reencoded_s": reencoded,
                     "ratio": reencoded / cached,
                     "wall_cached_s": runs[True][0], "wall_reencoded_s": runs[False][0],
                     "per_task": {str(c): runs[c][1]["per_task"] for c in (True, False)}},
    }
    print(f"\nmeasured, {n_tasks} tasks x {measured_epochs} epochs: speed-up of the cache {reencoded / cached:.1f}x "
          f"({reencoded:.1f} s / {cached:.1f} s); matrices {'identical' if same else 'DIFFER'}")
    if measured_epochs != args.number_of_epochs:
        cached_x = extrapolate(runs[True][1]["per_task"], measured_epochs, args.number_of_epochs)
        reencoded_x = extrapolate(runs[False][1]["per_task"], measured_epochs, args.number_of_epochs)
        summary["extrapolated"] = {"epochs": args.number_of_epochs, "cached_s": cached_x,
                                   "reencoded_s": reencoded_x, "ratio": reencoded_x / cached_x}
        print(f"extrapolated (not run) to {n_tasks} tasks x {args.number_of_epochs} epochs from the measured "
              f"training time per epoch of each task: speed-up of the cache {reencoded_x / cached_x:.1f}x "
              f"({reencoded_x:.1f} s / {cached_x:.1f} s)")
    with open(os.path.join(base, "linear_eval_bench.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main_bench()
