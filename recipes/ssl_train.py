#!/usr/bin/env python3
"""Continual self-supervised training, the SSL family: the YAML's ``ssl_method`` picks the Brain.

    python recipes/ssl_train.py hparams/synth/moco_train.yaml
    python recipes/ssl_train.py hparams/synth/simclr_train.yaml --replay_num_keep=20

For each task k (soundcl.core.task_loop.TaskLoop): train the encoder on two augmented
views of task k's clips plus the memory (``replay_num_keep`` random clips of every
finished task), keep the last epoch, and test it with a cosine kNN classifier whose
bank is the training clips of tasks 0..k (row k of the matrix). ``ssl_method`` is a
row of soundcl.methods.ssl.family.SSL_METHODS (the Brain and its task-data policy).
The task-wise checkpoints in <output_folder>/save/task<k>/ are what
recipes/linclf_train.py and recipes/knn_eval.py evaluate (--ssl_checkpoints_dir).

The published scripts are this recipe with their method fixed (``--ssl_method=...``):
simclr_train, simsiam_train, supclr_train, sup_labeldist, moco_train, supmoco_train,
barlowtwins_train, supsiam_train, cassle_simclr, cassle_moco, cassle_barlowtwins,
cassiam_train (``recipes/<script>.py``; docs/architecture.md).
"""
import functools

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.core.task_loop import TaskLoop
from soundcl.memory.policies import PerTaskRandom
from soundcl.methods.ssl import family

# What this recipe is made of; each part declares the hparams it reads.
# The chosen method's parts (SSL_METHODS[ssl_method].parts) are added in main.
NEEDS = [recipe, TaskLoop, family]


def needs(brain_class):
    """What the recipe running ``brain_class`` is made of (the ``NEEDS`` of a published script)."""
    return NEEDS + family.SSLMethod(brain_class).parts


def main(argv, ssl_method=None, brain_class=None):
    """Run the recipe. ``ssl_method``: a published script's method (the YAML's ``ssl_method`` must be
    the same or absent); ``brain_class``: the Brain to build instead of the method's (a subclass)."""
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    method = recipe.build(functools.partial(family.chosen, script_method=ssl_method), preview)
    brain_class = brain_class or method.brain
    needs_all = NEEDS + method._replace(brain=brain_class).parts
    preview = recipe.check_config(hparams_file, overrides, needs_all)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, needs_all)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The method and the task loop.
    brain = brain_class(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    loop = TaskLoop(
        brain,
        task_rows,
        task_data=method.task_data(hparams),
        memory=PerTaskRandom.from_hparams(hparams),
        hparams=hparams,
    )
    return loop.run()


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
