#!/usr/bin/env python3
"""Continual SimSiam (+ supervised term) with CaSSLe distillation (negative cosine) (cssl_sound hparams/us8k/cassiam_train.yaml).

    python recipes/cassiam_train.py hparams/synth/cassiam_train.yaml
    python recipes/cassiam_train.py hparams/us8k/cassiam_train.yaml --data_folder=/data/UrbanSound8K

For each task k (soundcl.core.task_loop.TaskLoop): train on two augmented views of
task k's clips plus the memory (``replay_num_keep`` random clips of every
finished task), keep the last epoch, and test the encoder with a cosine kNN
classifier whose bank is the training clips of tasks 0..k (row k of the
matrix). The method is :class:`soundcl.methods.ssl.cassle.CaSSiam`; the task-wise checkpoints in
<output_folder>/save/task<k>/ are what recipes/linclf_train.py and
recipes/knn_eval.py evaluate (--ssl_checkpoints_dir).
"""
import sys

import speechbrain as sb

from soundcl.core import recipe
from soundcl.memory.policies import PerTaskRandom
from soundcl.methods.ssl.cassle import CaSSiam
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, CaSSiam, CurrentTaskWithMemory, PerTaskRandom]


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
    brain = CaSSiam(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    loop = TaskLoop(
        brain,
        task_rows,
        task_data=CurrentTaskWithMemory(),
        memory=PerTaskRandom.from_hparams(hparams),
        hparams=hparams,
    )
    return loop.run()


if __name__ == "__main__":
    main(sys.argv[1:])
