#!/usr/bin/env python3
"""SupCLR + label distillation (cssl_sound's sup_labeldist.py): LwF on the previous task's outputs.

    python recipes/sup_labeldist.py hparams/synth/sup_labeldist.yaml
    python recipes/sup_labeldist.py hparams/us8k/sup_labeldist.yaml --data_folder=/data/UrbanSound8K

For each task k (soundcl.core.task_loop.TaskLoop): train as supclr_train.py
(sup_weight x CE + ssl_weight x NT-Xent, on task k's clips plus ``replay_num_keep``
clips of every finished task) plus ``dist_weight`` x the KL divergence between the
softened (``dist_tau``) classifier outputs of the frozen task k-1 model and the
current model on the same features (soundcl.methods.ssl.labeldist). Testing and checkpoints
as supclr_train.py.
"""
import sys

import speechbrain as sb

from soundcl.core import recipe
from soundcl.memory.policies import PerTaskRandom
from soundcl.methods.ssl.labeldist import SupCLRLabelDist
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, SupCLRLabelDist, CurrentTaskWithMemory, PerTaskRandom]


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
    brain = SupCLRLabelDist(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
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
