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

from soundcl import config
from soundcl.audio import check_clips, make_dataset
from soundcl.continual import TaskLoop
from soundcl.data.manifest import UNREADABLE_LIST_FILE, read_manifest

logger = logging.getLogger(__name__)


def load_recipe(argv):
    """Parse ``argv`` the SpeechBrain way; return (hparams, run_opts, hparams_file, overrides)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    # Fail on a wrong value now, in one line, before anything is built.
    config.validate(config.preview_hparams(hparams_file, overrides))
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if hparams.get("deterministic", False):
        use_deterministic_algorithms()
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return hparams, run_opts, hparams_file, overrides


def use_deterministic_algorithms():
    """Make GPU runs bit-reproducible (and so resumable to identical results).

    CPU runs are reproducible anyway; on CUDA, cuDNN autotuning and atomic
    reductions in backward passes differ from run to run unless disabled.
    """
    import torch

    # cuBLAS reads this when its first handle is created, i.e. before any GEMM.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def prepare_task_rows(hparams):
    """Run the YAML's ``prepare_data`` on the main process and read the manifests.

    Returns
    -------
    dict ``{"train": [rows of task k ...], "valid": [...], "test": [...]}``.
    """
    run_on_main(hparams["prepare_data"], kwargs={"save_folder": hparams["save_folder"]})
    # Every process re-runs it: with the manifests current, it only reads them.
    info = hparams["prepare_data"](save_folder=hparams["save_folder"])
    task_rows = {split: [read_manifest(p) for p in paths] for split, paths in info["manifests"].items()}
    if hparams.get("check_audio", True):
        task_rows = drop_bad_clips(hparams, task_rows)
    return task_rows


def drop_bad_clips(hparams, task_rows):
    """Decode every clip once (filling the audio cache); drop or reject bad ones."""
    all_rows = [row for tasks in task_rows.values() for rows in tasks for row in rows]
    on_bad_audio = hparams.get("on_bad_audio", "error")
    unreadable_list = os.path.join(hparams["save_folder"], UNREADABLE_LIST_FILE)
    extra = open(unreadable_list, encoding="utf-8").read().split("\n") if os.path.exists(unreadable_list) else []
    kwargs = {
        "rows": all_rows,
        "audio": hparams["audio"],
        "on_bad_audio": on_bad_audio,
        "report_path": os.path.join(hparams["output_folder"], "bad_audio_report.csv"),
        "extra_bad": [line for line in extra if line.strip()],
    }
    run_on_main(check_clips, kwargs=kwargs)  # decodes and caches once
    bad = check_clips(**{**kwargs, "report_path": None, "extra_bad": ()})  # cache hits
    if not bad:
        return task_rows
    return {split: [[r for r in rows if r["ID"] not in bad] for rows in tasks] for split, tasks in task_rows.items()}


def build_task_loop(brain, hparams, task_rows):
    """The shared :class:`TaskLoop` configured from hparams."""
    audio = hparams["audio"]
    # Training sets carry as many crops per clip as the Brain trains on; a Brain
    # whose items are not waveforms (e.g. cached embeddings) builds its own sets.
    n_views = getattr(brain, "n_train_views", 1)
    brain_make_dataset = getattr(brain, "make_task_dataset", None)
    return TaskLoop(
        brain=brain,
        task_rows=task_rows,
        make_dataset=brain_make_dataset
        or (lambda rows, train: make_dataset(rows, audio, train, n_views=n_views if train else 1)),
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
        task_dir_format=hparams.get("task_dir_format", "task{}"),
        task_data_policy=hparams.get("task_data_policy"),
    )


def main(brain_class, argv=None):
    """Entry point of a training recipe; returns the results dict."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        hparams, run_opts, _, _ = load_recipe(argv)
    except config.ConfigError as err:
        raise SystemExit(f"error: {err}") from None
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
