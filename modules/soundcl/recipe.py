"""What every recipe script does: parse, prepare, build the Brain, run the task loop.

A recipe in ``recipes/`` is a thin script::

    from soundcl.brains import SupervisedBrain
    from soundcl.recipe import main
    main(SupervisedBrain)

The YAML names the data preparation function (``prepare_data``), the memory
policy (``memory_policy``) and the modules saved in checkpoints
(``checkpoint_recoverables``).
"""
import logging
import os
import sys

from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

from soundcl.audio import make_dataset
from soundcl.continual import TaskLoop
from soundcl.data.common import read_manifest

logger = logging.getLogger(__name__)


def load_recipe(argv):
    """Parse ``argv`` the SpeechBrain way; return (hparams, run_opts, hparams_file, overrides)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return hparams, run_opts, hparams_file, overrides


def prepare_task_rows(hparams):
    """Run the YAML's ``prepare_data`` on the main process and read the manifests.

    Returns
    -------
    dict ``{"train": [rows of task k ...], "valid": [...], "test": [...]}``.
    """
    run_on_main(hparams["prepare_data"], kwargs={"save_folder": hparams["save_folder"]})
    # Every process re-runs it: with the manifests current, it only reads them.
    info = hparams["prepare_data"](save_folder=hparams["save_folder"])
    return {split: [read_manifest(p) for p in paths] for split, paths in info["manifests"].items()}


def build_task_loop(brain, hparams, task_rows):
    """The shared :class:`TaskLoop` configured from hparams."""
    audio = hparams["audio"]
    # A Brain whose items are not waveforms (e.g. cached embeddings) builds its own data sets.
    brain_make_dataset = getattr(brain, "make_task_dataset", None)
    return TaskLoop(
        brain=brain,
        task_rows=task_rows,
        make_dataset=brain_make_dataset or (lambda rows, train: make_dataset(rows, audio, train)),
        save_folder=hparams["save_folder"],
        output_folder=hparams["output_folder"],
        recoverables=hparams["checkpoint_recoverables"],
        per_task_state=hparams.get("per_task_state", ["epoch_counter"]),
        memory_policy=hparams.get("memory_policy"),
        train_loader_kwargs=hparams["train_dataloader_opts"],
        eval_loader_kwargs=hparams["eval_dataloader_opts"],
        seed=hparams["seed"],
        task_classes=hparams.get("task_classes"),
        stop_after_task=hparams.get("stop_after_task"),
        task_data_policy=hparams.get("task_data_policy"),
    )


def main(brain_class, argv=None):
    """Entry point of a training recipe; returns the results dict."""
    argv = sys.argv[1:] if argv is None else argv
    hparams, run_opts, _, _ = load_recipe(argv)
    task_rows = prepare_task_rows(hparams)
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=None,
    )
    loop = build_task_loop(brain, hparams, task_rows)
    return loop.run()
