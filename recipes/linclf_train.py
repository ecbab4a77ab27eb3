#!/usr/bin/env python3
"""Linear evaluation of task-wise encoder checkpoints (seen / subset / buffer / full).

    python recipes/linclf_train.py hparams/synth/linclf_train.yaml --ssl_checkpoints_dir=<ENCODER_OUTPUT_FOLDER>/save --linclf_train_type=seen
    python recipes/linclf_train.py hparams/synth/linclf_train_10task.yaml   # 10 tasks of one class (also us8k, tau19)

<ENCODER_OUTPUT_FOLDER> is the output folder of an encoder run (e.g.
results/synth/sup_train_replay0/1986 after the README's demo). For each task k:
load the frozen encoder of <ssl_checkpoints_dir>/task<k>, embed every clip the
task needs once (save/task<k>/embeddings.pt), then train a linear classifier (best epoch on the validation clips) on the
clips that ``linclf_train_type`` names (seen: tasks 0..k; subset: ``replay_num_keep``
clips of each of tasks 0..k; buffer: task k + ``replay_num_keep`` clips of each earlier
task; full: every task) and test on tasks 0..k (full: every task) -> row k.
"""

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.methods.evaluation.linear_eval import LinearEvalBrain, LinearEvalSets
from soundcl.memory.policies import NoMemory
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, LinearEvalBrain, LinearEvalSets]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The evaluation and the task loop (no replay memory: the protocol picks the clips).
    brain = LinearEvalBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    loop = TaskLoop(
        brain,
        task_rows,
        task_data=LinearEvalSets.from_hparams(hparams, with_valid=True),
        memory=NoMemory(),
        hparams=hparams,
    )
    return loop.run()


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
