#!/usr/bin/env python3
"""Supervised class-incremental training with a continual-learning strategy.

    python recipes/sup_train.py hparams/synth/sup_train.yaml                       # fine-tuning
    python recipes/sup_train.py hparams/synth/sup_train.yaml --replay_num_keep=20  # replay
    python recipes/sup_train.py hparams/synth/sup_train.yaml --strategy=joint --experiment_name=joint
    python recipes/sup_train.py hparams/us8k/sup_train.yaml --data_folder=/data/UrbanSound8K
    python recipes/sup_train.py hparams/synth/replay_train.yaml --strategy=derpp --experiment_name=derpp  # BC-ResNet
    python recipes/sup_train.py hparams/synth/online_train.yaml                    # online ER: one pass, anytime curve
    python recipes/sup_train.py hparams/synth/sup_train_domain.yaml                # domain-incremental (task_domains)
    python recipes/sup_train.py hparams/synth/dcase_domain.yaml                    # DCASE 2026 domain-BN baseline

For each task k (soundcl.core.task_loop.TaskLoop): train on the clips the strategy's
task-data policy gives (by default task k's clips plus the memory,
``replay_num_keep`` random clips of every finished task), keep the best epoch,
test on tasks 0..k (row k of the accuracy matrix), update the memory.
``--strategy`` picks the Brain and policies in soundcl.methods.supervised.strategies.STRATEGIES
(docs/protocols.md, "Strategies").
``online: True`` (online_train.yaml; er, er_ace, derpp): one pass over each task's clips, the memory
updated per batch, anytime accuracy (soundcl.methods.supervised.online).
Results: <output_folder>/results.json, results.csv, accuracy_matrix.png (online: anytime_accuracy.csv/.png,
online_batches.csv).
"""

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.methods.supervised import strategies
from soundcl.methods.supervised.strategies import STRATEGIES  # noqa: F401  name -> (Brain, task-data policy, memory policy)
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
# The chosen strategy's parts (STRATEGIES[strategy].parts) are added in main.
NEEDS = [recipe, TaskLoop, strategies]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    strategy = recipe.build(strategies.chosen, preview)
    needs = NEEDS + strategy.parts
    preview = recipe.check_config(hparams_file, overrides, needs)
    recipe.build(strategy.memory.from_hparams, preview)  # memory hparams' values, before anything runs
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, needs)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The method and the task loop.
    brain = strategy.brain_class(hparams)(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts
    )
    memory = recipe.build(strategy.memory.from_hparams, hparams)  # replay_num_keep=0: fine-tuning
    brain.attach_memory(memory)  # online mode (online: True): the Brain updates it after every batch
    loop = TaskLoop(brain, task_rows, task_data=strategy.task_data_policy(hparams), memory=memory, hparams=hparams)
    return loop.run()


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
