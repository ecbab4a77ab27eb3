#!/usr/bin/env python3
"""SupCLR with A-GEM (cssl_sound's supclr_train_agem.py): the memory gives a reference gradient.

    python recipes/supclr_train_agem.py hparams/synth/supclr_train_agem.yaml
    python recipes/supclr_train_agem.py hparams/us8k/supclr_train_agem.yaml --data_folder=/data/UrbanSound8K

For each task k (soundcl.core.task_loop.TaskLoop): train on task k's clips only; from
task 1 on, each step first backpropagates the SupCLR loss of a batch of memory
clips (``replay_num_keep`` random clips of every finished task) and, when the
training batch's gradient conflicts with that reference gradient (negative dot
product), projects it (soundcl.methods.ssl.agem). Testing and checkpoints as supclr_train.py.
"""

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.methods.ssl.agem import AGEMMemory, AGEMTaskData, SupCLRAGEM
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, SupCLRAGEM, AGEMTaskData, AGEMMemory]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)
    memory = AGEMMemory.from_hparams(hparams)  # refuses mixup and an empty memory

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The method and the task loop.
    brain = SupCLRAGEM(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    loop = TaskLoop(
        brain,
        task_rows,
        task_data=AGEMTaskData(),
        memory=memory,
        hparams=hparams,
    )
    return loop.run()


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
