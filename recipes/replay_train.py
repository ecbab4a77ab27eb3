#!/usr/bin/env python3
"""Class-incremental replay with a fixed-size memory chosen by a memory policy.

    python recipes/replay_train.py hparams/synth/replay_train.yaml --mode=replay --mem_manage=uncertainty
    python recipes/replay_train.py hparams/tau19/replay_train.yaml --data_folder=/data/TAU-urban-acoustic-scenes-2019-development \
        --mode=replay --mem_manage=uncertainty --uncert_metric=noisytune --metric_k=4 --memory_size=500
    python recipes/replay_train.py hparams/esc50/replay_train.yaml --data_folder=/data/ESC-50-master --cross_validate=True

For each task k (soundcl.core.task_loop.TaskLoop): train on task k's clips plus the
memory, keep the best epoch (early stopping with ``patience``), test on tasks
0..k, then let the memory policy (``mem_manage``: random, reservoir, prototype,
uncertainty, balanced_random) choose the ``memory_size`` clips kept among the
memory and task k's clips. ``mode: finetune`` keeps no memory.
"""

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.memory.policies import FixedSizeMemory
from soundcl.methods.supervised.replay import ReplayBrain, write_cross_validation_summary
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, ReplayBrain, CurrentTaskWithMemory, FixedSizeMemory]


def train(hparams_file, run_opts, overrides, preview):
    """One run: every task, one test fold."""
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)
    task_rows = recipe.prepare_task_rows(hparams)
    brain = ReplayBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    memory = recipe.build(FixedSizeMemory.from_hparams, hparams)
    return TaskLoop(brain, task_rows, task_data=CurrentTaskWithMemory(), memory=memory, hparams=hparams).run()


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    recipe.build(FixedSizeMemory.from_hparams, preview)  # mode / mem_manage values, before anything runs
    sb.utils.distributed.ddp_init_group(run_opts)
    if not preview["cross_validate"]:
        return train(hparams_file, run_opts, overrides, preview)

    # 2. Cross-validation: the whole run once per fold, then mean and std over folds.
    recipe.require(preview, ["cv_folds", "cv_output_folder", "test_fold"], hparams_file, "cross_validate=True")
    per_fold = {}
    for fold in preview["cv_folds"]:
        fold_overrides = recipe.with_override(overrides, "test_fold", fold)
        fold_preview = recipe.check_config(hparams_file, fold_overrides, NEEDS)
        per_fold[str(fold)] = train(hparams_file, run_opts, fold_overrides, fold_preview)
    return write_cross_validation_summary(per_fold, str(preview["cv_output_folder"]))


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
