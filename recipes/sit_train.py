#!/usr/bin/env python3
"""SIT: slow learner with incremental transfer (CochlScene -> TAU 2022 Mobile).

    python recipes/sit_train.py hparams/synth/sit_train.yaml
    python recipes/sit_train.py hparams/tau22/sit_train.yaml --cochl_folder=... --tau22_folder=... \
        --subset=25 --backbone_lr=1e-4 --head_lr=1e-3

Each stage is one task of the shared loop (save/stage{k}/, resumable); the
stage accuracies R[k, k] and the last stage's device-wise test accuracy go to
``sit_results.json``.
"""
import json
import os
import sys

from soundcl.recipe import build_task_loop, load_recipe, prepare_task_rows
from soundcl.scene_brains import DEVICE_ACCURACY_FILE, SITBrain


def main(argv=None):
    hparams, run_opts, _, _ = load_recipe(sys.argv[1:] if argv is None else argv)
    task_rows = prepare_task_rows(hparams)
    brain = SITBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
                     run_opts=run_opts, checkpointer=None)
    loop = build_task_loop(brain, hparams, task_rows)
    results = loop.run()
    if results is None or results.get("partial"):
        return results
    matrix = results["accuracy_matrix"]
    last = loop.n_tasks - 1
    with open(os.path.join(loop.task_dir(last), DEVICE_ACCURACY_FILE), encoding="utf-8") as f:
        device_accuracy = json.load(f)[-1]  # the last stage's own test set
    summary = {
        "stage_accuracy": [matrix[k][k] for k in range(loop.n_tasks)],
        "device_accuracy": device_accuracy,
        "backbone_lr": hparams["backbone_lr"],
        "head_lr": hparams["head_lr"],
        "subset": hparams.get("subset"),
    }
    with open(os.path.join(hparams["output_folder"], "sit_results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    results["sit"] = summary
    return results


if __name__ == "__main__":
    main()
