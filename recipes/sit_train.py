#!/usr/bin/env python3
"""SIT: slow learner with incremental transfer (CochlScene -> TAU 2022 Mobile).

    python recipes/sit_train.py hparams/synth/sit_train.yaml
    python recipes/sit_train.py hparams/tau22/sit_train.yaml --cochl_folder=/data/CochlScene \
        --tau22_folder=/data/TAU-urban-acoustic-scenes-2022-mobile-development --subset=25

Each stage is one task of the shared loop (save/stage{k}/, resumable): at a
stage change the heads are re-initialised and the backbone kept; from
``slow_learner_from_stage`` on, the backbone learns at ``backbone_lr`` and the
heads at ``head_lr`` (``backbone_lr == head_lr`` is the Seq-FT baseline). The
stage accuracies R[k, k] and the last stage's device-wise test accuracy go to
``sit_results.json``.
"""
import json
import os

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.base.atomic import write_json_atomic
from soundcl.memory.policies import NoMemory
from soundcl.methods.scene.brains import DEVICE_ACCURACY_FILE, SITBrain
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, SITBrain, CurrentTaskWithMemory]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: one "task" per stage (CochlScene, then TAU 2022), prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. Stages through the task loop (no replay memory).
    brain = SITBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    loop = TaskLoop(brain, task_rows, task_data=CurrentTaskWithMemory(), memory=NoMemory(), hparams=hparams)
    results = loop.run()
    if results is None or results["partial"]:
        return results

    # 4. The transfer summary: each stage on its own test set, devices of the last stage.
    matrix = results["accuracy_matrix"]
    with open(os.path.join(loop.task_dir(loop.n_tasks - 1), DEVICE_ACCURACY_FILE), encoding="utf-8") as f:
        device_accuracy = json.load(f)[-1]  # the last stage's own test set
    results["sit"] = {
        "subset": hparams["subset"],
        "stage_accuracy": [matrix[k][k] for k in range(loop.n_tasks)],
        "device_accuracy": device_accuracy,
        "backbone_lr": hparams["backbone_lr"],
        "head_lr": hparams["head_lr"],
    }
    write_json_atomic(os.path.join(hparams["output_folder"], "sit_results.json"), results["sit"], indent=1)
    return results


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
