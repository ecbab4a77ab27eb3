#!/usr/bin/env python3
"""Supervised class-incremental training: fine-tuning, or replay of a few clips per task.

    python recipes/sup_train.py hparams/synth/sup_train.yaml                       # fine-tuning
    python recipes/sup_train.py hparams/synth/sup_train.yaml --replay_num_keep=20  # replay
    python recipes/sup_train.py hparams/us8k/sup_train.yaml --data_folder=/data/UrbanSound8K

For each task k (soundcl.task_loop.TaskLoop): train on task k's clips plus the
memory (``replay_num_keep`` random clips of every finished task), keep the
best epoch, test on tasks 0..k (row k of the accuracy matrix), update the memory.
Results: <output_folder>/results.json, results.csv, accuracy_matrix.png.
"""
import sys

import speechbrain as sb

from soundcl import recipe
from soundcl.brains import SupervisedBrain
from soundcl.memory import PerTaskRandom
from soundcl.task_data import CurrentTaskWithMemory
from soundcl.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, SupervisedBrain, CurrentTaskWithMemory, PerTaskRandom]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The method and the task loop.
    brain = SupervisedBrain(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts
    )
    loop = TaskLoop(
        brain,
        task_rows,
        task_data=CurrentTaskWithMemory(),
        memory=PerTaskRandom.from_hparams(hparams),  # replay_num_keep=0: fine-tuning
        hparams=hparams,
    )
    return loop.run()


if __name__ == "__main__":
    main(sys.argv[1:])
