"""The steps every recipe script takes, in SpeechBrain's order.

A recipe (``recipes/*.py``) reads top to bottom::

    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)   # one line on a bad key or value
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)
    task_rows = recipe.prepare_task_rows(hparams)                   # prepare on the main process
    brain = SomeBrain(modules=..., opt_class=..., hparams=hparams, run_opts=run_opts)
    TaskLoop(brain, task_rows, task_data=..., memory=..., hparams=hparams).run()

``NEEDS`` lists what the recipe is made of (this module, the task loop, the
Brain, the policies); each declares the hparams it reads (:mod:`soundcl.base.contract`).
"""
import atexit
import json
import logging
import os

import torch
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main

from soundcl.core import config
from soundcl.results import tensorboard_log
from soundcl.base.atomic import write_json_atomic
from soundcl.data.audio import check_clips
from soundcl.base.contract import REQUIRED, ConfigError, check_declared, with_defaults
from soundcl.data.manifest import UNREADABLE_LIST_FILE, read_manifest

logger = logging.getLogger(__name__)

#: What this module reads.
HPARAMS = {
    "output_folder": REQUIRED,
    "save_folder": REQUIRED,
    "prepare_data": REQUIRED,  # prepare(save_folder) -> {"manifests": {split: [csv of task k]}}
    "audio": REQUIRED,
    # torch CPU threads: CPU results are bit-identical only for the same thread count.
    "cpu_threads": REQUIRED,
    "deterministic": False,  # True: bit-reproducible GPU runs (slower)
    "check_audio": True,  # decode every clip once at start
    # Its num_workers also decode the clips of that start-up pass in parallel (soundcl.data.audio.check_clips).
    "train_dataloader_opts": REQUIRED,
    "on_bad_audio": "error",  # or skip: leave unusable clips out, listed in bad_audio_report.csv
    # True: also TensorBoard scalars in <output_folder>/tensorboard/ (soundcl.results.tensorboard_log).
    "use_tensorboard": False,
}

#: The run's description kept in its output folder; a rerun resumes only if it matches.
RUN_CONFIG_FILE = "run_config.json"
#: Keys that may change between the runs of one output folder (they do not change what is computed).
RESUMABLE_CHANGES = ("stop_after_task", "ckpt_interval_minutes", "audio_cache", "num_workers", "use_tensorboard")
#: Keys that later versions of soundcl added, with the value (as :func:`run_description` writes it)
#: that computes what a run made before the key existed computed: an older run folder, whose
#: run_config.json lacks the key, resumes with that value instead of refusing to.
KEYS_ADDED_LATER = {"online": "false", "task_domains": "null", "eval_future_tasks": "true"}


def check_config(hparams_file, overrides, needs):
    """Check the YAML with the overrides applied, before anything is built.

    Values (:func:`soundcl.core.config.validate`) and the keys that ``needs``
    declare: a wrong one stops the run with one line naming it.

    Returns
    -------
    The previewed hparams (plain data, no object built), declared defaults filled in.
    """
    try:
        overrides = config.original_command_overrides(overrides)
        preview = config.preview_hparams(hparams_file, overrides)
        check_declared(preview, needs, hparams_file)
        config.validate(preview)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    return with_defaults(preview, needs)


def load_hparams(hparams_file, overrides, needs):
    """Build the hparams objects; fill declared defaults; apply ``cpu_threads`` and ``deterministic``."""
    overrides = config.original_command_overrides(overrides)  # cssl_sound's flag names and encoder folder
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = with_defaults(load_hyperpyyaml(fin, overrides), needs)
    torch.set_num_threads(int(hparams["cpu_threads"]))
    if hparams["deterministic"]:
        use_deterministic_algorithms()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Gloo's threads must be joined before the interpreter tears down: left to the C++ static
        # destructors, a rank can abort at exit ("terminate called without an active exception").
        atexit.register(_destroy_process_group)
    return hparams


def _destroy_process_group():
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def use_deterministic_algorithms():
    """Make GPU runs bit-reproducible (and so resumable to identical results).

    On CUDA, cuDNN autotuning and atomic reductions in backward passes differ
    from run to run unless disabled.
    """
    # cuBLAS reads this when its first handle is created, i.e. before any GEMM.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def create_experiment_directory(hparams, hparams_file, overrides, preview):
    """SpeechBrain's experiment folder, refusing to resume a run made with other hparams.

    The folder has no time stamp, so that rerunning a command resumes it; a
    rerun with another ``batch_size`` (or process count, thread count ...)
    would silently reuse the finished tasks of the first, so it stops, naming
    the keys that differ.
    """
    folder = hparams["output_folder"]
    overrides = config.original_command_overrides(overrides)
    current = run_description(preview)
    path = os.path.join(folder, RUN_CONFIG_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fin:
            before = json.load(fin)
        for key, value in KEYS_ADDED_LATER.items():
            if key not in before and current.get(key) == value:
                before[key] = value
        differing = sorted(key for key in set(before) | set(current) if before.get(key) != current.get(key))
        if differing:
            shown = ", ".join(f"{key} ({_short(before.get(key))} -> {_short(current.get(key))})" for key in differing)
            raise SystemExit(
                f"error: {folder} holds a run started with other hparams: {shown}. Rerun with the same values "
                f"to resume it, or start a fresh run elsewhere (--output_base / --experiment_name) or delete the folder"
            )
    sb.create_experiment_directory(experiment_directory=folder, hyperparams_to_save=hparams_file, overrides=overrides)
    if if_main_process() and not os.path.exists(path):
        write_json_atomic(path, current, indent=1)
    if if_main_process():
        from soundcl.core.run_files import save_training_config  # its YAML and overrides, for inference.yaml

        save_training_config(folder, hparams_file, overrides)
    sb.utils.distributed.ddp_barrier()
    if hparams["use_tensorboard"]:
        use_tensorboard(hparams)


def use_tensorboard(hparams):
    """TensorBoard scalars in ``<output_folder>/tensorboard/`` (:mod:`soundcl.results.tensorboard_log`).

    Per epoch: the ``train_logger`` (if the YAML has one) becomes a
    :class:`~soundcl.results.tensorboard_log.TeeTrainLogger` writing to it and to
    TensorBoard; per task: :func:`soundcl.results.metrics.write_results` adds the
    accuracies, ``A_k`` and the memory-update time.
    """
    tensorboard = tensorboard_log.enable(hparams["output_folder"])
    if hparams.get("train_logger") is not None:
        hparams["train_logger"] = tensorboard_log.TeeTrainLogger(hparams["train_logger"], tensorboard)


def run_description(preview):
    """What the results of a run depend on: every hparam (as text) and the process count."""
    description = {str(key): json.dumps(_plain(value), sort_keys=True, default=str)
                   for key, value in preview.items() if key not in RESUMABLE_CHANGES}
    description["world_size"] = os.environ.get("WORLD_SIZE", "1")
    return description


def _plain(value):
    """Previewed YAML (ruamel nodes, tags) as plain data, without the keys of RESUMABLE_CHANGES."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if isinstance(value, dict):
        plain = {str(k): _plain(v) for k, v in value.items() if k not in RESUMABLE_CHANGES}
        return {"!": tag, **plain} if tag else plain
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if tag:
        return f"{tag} {getattr(value, 'value', value)}"
    return value


def _short(text, limit=60):
    text = "absent" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    if hparams["check_audio"]:
        task_rows = drop_bad_clips(hparams, task_rows)
    return task_rows


def drop_bad_clips(hparams, task_rows):
    """Decode every clip once (filling the audio cache); drop or reject bad ones."""
    all_rows = [row for tasks in task_rows.values() for rows in tasks for row in rows]
    unreadable_list = os.path.join(hparams["save_folder"], UNREADABLE_LIST_FILE)
    extra = open(unreadable_list, encoding="utf-8").read().split("\n") if os.path.exists(unreadable_list) else []
    kwargs = {
        "rows": all_rows,
        "audio": hparams["audio"],
        "on_bad_audio": hparams["on_bad_audio"],
        "report_path": os.path.join(hparams["output_folder"], "bad_audio_report.csv"),
        "extra_bad": [line for line in extra if line.strip()],
        # The cache fill is the longest one-time wait: as many decoding processes as the training loader has.
        "num_workers": int(dict(hparams["train_dataloader_opts"]).get("num_workers", 0)),
    }
    run_on_main(check_clips, kwargs=kwargs)  # decodes and caches once
    bad = check_clips(**{**kwargs, "report_path": None, "extra_bad": ()})  # cache hits
    if not bad:
        return task_rows
    return {split: [[r for r in rows if r["ID"] not in bad] for rows in tasks] for split, tasks in task_rows.items()}


def build(builder, hparams):
    """``builder(hparams)``, a configuration error ending the run in one line (e.g. a policy name)."""
    try:
        return builder(hparams)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None


def require(preview, keys, hparams_file, reason):
    """Stop in one line if ``preview`` lacks one of ``keys``, which ``reason`` needs."""
    missing = [key for key in keys if key not in preview]
    if missing:
        raise SystemExit(f"error: {reason} needs the key '{missing[0]}', which {hparams_file} lacks")


def with_override(overrides, key, value):
    """Command-line ``overrides`` (SpeechBrain's YAML string or a dict) with ``key: value`` set."""
    import ruamel.yaml

    merged = dict(ruamel.yaml.YAML(typ="safe").load(overrides) or {}) if isinstance(overrides, str) else dict(overrides or {})
    merged[key] = value
    return merged
