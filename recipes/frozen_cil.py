#!/usr/bin/env python3
"""Class-incremental baselines on one frozen pretrained encoder: NCM (SimpleCIL) and RanPAC.

    python recipes/frozen_cil.py hparams/synth/ncm_eval.yaml --ssl_checkpoints_dir=<ENCODER_OUTPUT_FOLDER>/save
    python recipes/frozen_cil.py hparams/synth/ranpac_eval.yaml --ssl_checkpoints_dir=<ENCODER_OUTPUT_FOLDER>/save
    python recipes/frozen_cil.py hparams/tau22/frozen_passt.yaml --passt_pretrained_path=<PASST_CHECKPOINT>   # no run

``frozen_head`` picks the classifier (soundcl.methods.evaluation.frozen_cil.FROZEN_HEADS):
ncm_eval.yaml has ``frozen_head: ncm``, ranpac_eval.yaml ``frozen_head: ranpac``; frozen_passt.yaml
(either head) freezes an AudioSet PaSST loaded from a local checkpoint.
<ENCODER_OUTPUT_FOLDER> is the output folder of any encoder run (supervised or SSL);
its ``task<encoder_task>`` encoder (default 0) is frozen and serves every task
(``--encoder_task=pretrained --ssl_checkpoints_dir=null``: the YAML's encoder as built,
e.g. PaSST with a local ``pretrained_path``). Each clip is embedded once for the
whole run (save/embeddings.pt). For each task k, without replay: update the head
with task k's training clips (NCM: class means; RanPAC: Gram matrix and ridge
solve) and test on tasks 0..k -> row k.
"""

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.core.task_loop import TaskLoop
from soundcl.memory.policies import NoMemory
from soundcl.methods.evaluation import frozen_cil
from soundcl.methods.evaluation.frozen_cil import CurrentTaskOnly

# What this recipe is made of; each part declares the hparams it reads.
# The chosen head's Brain (frozen_cil.FROZEN_HEADS[frozen_head]) is added in main.
NEEDS = [recipe, TaskLoop, frozen_cil, CurrentTaskOnly]


def needs(preview):
    """What the recipe running the YAML ``preview`` is made of (its head's Brain included)."""
    return NEEDS + [recipe.build(frozen_cil.chosen, preview)]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    needs_all = needs(preview)
    preview = recipe.check_config(hparams_file, overrides, needs_all)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, needs_all)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The head's Brain and the task loop (no replay: task k's clips only).
    brain_class = needs_all[-1]
    brain = brain_class(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    loop = TaskLoop(brain, task_rows, task_data=CurrentTaskOnly(), memory=NoMemory(), hparams=hparams)
    return loop.run()


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
