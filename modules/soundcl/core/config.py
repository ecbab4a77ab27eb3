"""Checks of a recipe's configuration before anything is built or trained.

A wrong value should fail at start, in one line that names the key, the value
and what is allowed, not hours later deep inside a batch. The checks run on
the YAML with the command-line overrides applied but no object built yet
(:func:`preview_hparams`), so even values consumed by ``!new:`` objects are
checked first.
"""
import difflib
import glob
import json
import logging
import os

import ruamel.yaml
from hyperpyyaml import resolve_references

from soundcl.base.contract import ConfigError
from soundcl.models.ascl_bcresnet import REPLAY_ENCODERS
from soundcl.models.encoders import ENCODER_KINDS

logger = logging.getLogger(__name__)

#: Keys whose values come from a fixed set, wherever a recipe uses them.
CHOICES = {
    "linclf_train_type": ("seen", "subset", "buffer", "full"),
    # soundcl.memory.policies.MEMORY_POLICIES and soundcl.memory.perturbations.UNCERT_METRICS
    "mem_manage": ("random", "reservoir", "prototype", "prototype_herding", "uncertainty", "balanced_random"),
    "uncert_metric": ("noisytune", "noisytune_embedding", "shift", "speed_roll", "noise", "mask", "combination"),
    "mode": ("finetune", "replay"),
    "emb_norm_type": ("bn", "in", "ln", "none"),
    "proj_norm_type": ("bn", "ln", "none"),
    "precision": ("fp32", "fp16", "bf16"),
    "on_bad_audio": ("error", "skip"),
    "knn_rule": ("exp", "vote"),
    "knn_bank_balance": ("resample", "none"),  # soundcl.methods.evaluation.knn_eval.KNN_BANK_BALANCES
    "pad_short_crops": ("batch", "dataset"),  # soundcl.data.audio.PAD_SHORT_CROPS
    "valid_split": ("location", "test"),  # soundcl.data.tau19.VALID_SPLITS
    "two_view_forward": ("separate", "joint"),
    "embedding_head": ("pool", "fc"),
    "valid_replay": ("fraction", "count"),
    "sup_loss_views": ("first", "both"),
    "encoder_checkpoint": ("last", "final"),
    "frozen_head": ("ncm", "ranpac"),  # soundcl.methods.evaluation.frozen_cil.FROZEN_HEADS
    "encoder": ENCODER_KINDS,
    "replay_encoder": REPLAY_ENCODERS,
    "backbone": ("passt", "dsmn"),
    # soundcl.methods.supervised.strategies.STRATEGIES (recipes/sup_train.py)
    "strategy": ("finetune_or_replay", "joint", "joint_incremental", "lwf", "ewc", "er_ace", "derpp", "gdumb", "icarl",
                 "bic", "wa", "er", "dcase_domain_bn"),
    "domain_bn_shared": ("frozen", "trained"),  # soundcl.methods.supervised.domain_bn.SHARED_MODES
    "replay_batches": ("shuffled", "class_balanced"),  # soundcl.methods.supervised.balanced.REPLAY_BATCHES
}

#: cssl_sound's command-line names -> soundcl's (``knn_eval.py --knn_train_type=buffer --knn_t=0.1``).
ORIGINAL_NAMES = {"knn_train_type": "linclf_train_type", "knn_t": "knn_temperature"}


def original_command_overrides(overrides):
    """The overrides of a command written for cssl_sound, in soundcl's terms (idempotent).

    * the original kNN flag names (:data:`ORIGINAL_NAMES`) become soundcl's;
    * ``ssl_checkpoints_dir=<ENCODER_OUTPUT_DIR>/save`` (the original's encoder folder): soundcl's
      encoder run writes ``<output_base>/<experiment_name>/<seed>/save``, so a folder without
      ``task<k>/`` folders that holds one such run is replaced by that run's ``save/`` (logged in one
      line); with several, a :class:`ConfigError` lists them.

    Arguments
    ---------
    overrides : str or dict
        YAML text of ``sb.parse_arguments``, or a dict (a recipe's own overrides, e.g. a CV fold's).

    Returns
    -------
    the same kind, translated.
    """
    if isinstance(overrides, dict):
        return _original_dict_overrides(overrides)
    if not overrides or not overrides.strip():
        return overrides
    lines = overrides.split("\n")
    keys = [line.split(":", 1)[0] for line in lines]  # top-level keys start a line (sb.parse_arguments)
    for original, ours in ORIGINAL_NAMES.items():
        if original in keys:
            if ours in keys:
                raise ConfigError(f"--{original} (cssl_sound's name) and --{ours} are the same option: give one")
            at = keys.index(original)
            lines[at], keys[at] = ours + lines[at][len(original):], ours
    if "ssl_checkpoints_dir" in keys:
        at = keys.index("ssl_checkpoints_dir")
        folder = ruamel.yaml.YAML(typ="safe", pure=True).load(lines[at]).get("ssl_checkpoints_dir")
        run = _one_encoder_run(folder) if isinstance(folder, str) else None
        if run is not None:
            lines[at] = f"ssl_checkpoints_dir: {json.dumps(run)}"
    return "\n".join(lines)


def _original_dict_overrides(overrides):
    """:func:`original_command_overrides` of a dict of overrides."""
    translated = {}
    for key, value in overrides.items():
        ours = ORIGINAL_NAMES.get(key, key)
        if ours in translated or (ours != key and ours in overrides):
            raise ConfigError(f"--{key} (cssl_sound's name) and --{ours} are the same option: give one")
        translated[ours] = value
    folder = translated.get("ssl_checkpoints_dir")
    run = _one_encoder_run(folder) if isinstance(folder, str) else None
    if run is not None:
        translated["ssl_checkpoints_dir"] = run
    return translated


def _one_encoder_run(folder):
    """The ``save/`` folder of the one encoder run under ``folder`` (or under the ``<dir>`` of a
    missing ``<dir>/save``) when ``folder`` has no ``task<k>/`` folders; None if there is none."""
    if _has_task_folders(folder):
        return None
    base = folder if os.path.isdir(folder) else os.path.dirname(folder.rstrip("/"))
    if not os.path.isdir(base) or not (os.path.isdir(folder) or os.path.basename(folder.rstrip("/")) == "save"):
        return None
    runs = sorted(path for depth in ("*", "*/*", "*/*/*") for path in glob.glob(os.path.join(base, depth, "save"))
                  if _has_task_folders(path))
    if len(runs) > 1:
        raise ConfigError(f"ssl_checkpoints_dir={folder} holds no task<k>/ folders and {base} holds "
                          f"{len(runs)} encoder runs: name one of {', '.join(runs)}")
    if not runs:
        return None
    logger.info("ssl_checkpoints_dir %s has no task<k>/ folders: using the one encoder run under it, %s",
                folder, runs[0])
    return runs[0]


def _has_task_folders(folder):
    return os.path.isdir(os.path.join(folder, "task0"))


def preview_hparams(hparams_file, overrides=""):
    """The hparams as plain data (no object built), overrides applied.

    Raises
    ------
    ConfigError for an override key the YAML does not have.
    """
    with open(hparams_file, encoding="utf-8") as fin:
        try:
            text = resolve_references(fin, overrides, overrides_must_match=True).getvalue()
        except KeyError as err:
            raise _unknown_key_error(str(err), hparams_file) from None
    return ruamel.yaml.YAML(typ="rt").load(text)


def _unknown_key_error(message, hparams_file):
    # hyperpyyaml says: "Override 'KEY' not found in: ['a', 'b', ...]"
    parts = message.split("'")
    key = parts[1] if len(parts) > 2 else message
    with open(hparams_file, encoding="utf-8") as fin:
        known = [line.split(":", 1)[0] for line in fin if line[:1].isalpha() and ":" in line]
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown hparam '{key}' (not in {hparams_file}){hint}")


def _fail(key, value, allowed):
    raise ConfigError(f"{key}={value!r} is not valid: expected {allowed}")


def validate(hparams):
    """Check the values of a previewed hparams mapping; raise ConfigError.

    Only keys that the recipe has are checked, so one function serves all
    recipes.
    """
    for key, allowed in CHOICES.items():
        if key in hparams and hparams[key] is not None and str(hparams[key]) not in allowed:
            _fail(key, hparams[key], "one of " + ", ".join(allowed))

    # Local weights only (never downloaded): a wrong path stops before anything is built.
    for key in sorted(k for k in hparams if k.endswith("pretrained_path")):
        path = hparams[key]
        if path is not None and not os.path.isfile(str(path)):
            _fail(key, path, "the path of a local checkpoint file (weights are never downloaded; see docs/ondevice.md)")

    if "replay_num_keep" in hparams:
        value = hparams["replay_num_keep"]
        if not (str(value).lower() == "all" or (isinstance(value, int) and value >= 0)):
            _fail("replay_num_keep", value, "an integer >= 0 or 'all'")

    # Values computed when the YAML is loaded (e.g. hparams/folder/: !apply on the data folder)
    # are checked by what computes them.
    computed = {key for key in ("task_classes", "n_classes") if _computed(hparams.get(key))}
    if "task_classes" in hparams and hparams["task_classes"] is not None and not computed:
        from soundcl.data.splits import validate_task_classes

        n_classes = hparams.get("n_classes")
        try:
            validate_task_classes([list(t) for t in hparams["task_classes"]], n_classes)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"task_classes={_plain(hparams['task_classes'])} is not valid: {err}") from None
    if hparams.get("task_domains") is not None:  # domain-incremental learning (soundcl.data.domains)
        from soundcl.data.domains import validate_task_domains

        try:
            validate_task_domains(_plain(hparams["task_domains"]))
        except ValueError as err:
            raise ConfigError(f"task_domains={_plain(hparams['task_domains'])} is not valid: {err}") from None

    if hparams.get("mode", "replay") != "finetune" and "memory_size" in hparams and not computed:
        memory_size = hparams["memory_size"]
        if not isinstance(memory_size, int) or memory_size < 0:
            _fail("memory_size", memory_size, "an integer >= 0")
        # The classes the run will meet: those of task_classes, else all of them.
        task_classes = hparams.get("task_classes")
        n_used = len({c for task in task_classes for c in task}) if task_classes else hparams.get("n_classes")
        if n_used and 0 < memory_size < n_used:
            _fail("memory_size", memory_size, f"at least the number of classes, {n_used} (one clip per class)")

    if "ssl_checkpoints_dir" in hparams:
        folder = hparams["ssl_checkpoints_dir"]
        pretrained = folder is None and str(hparams.get("encoder_task")) == "pretrained"  # frozen_cil: no run
        if not pretrained and (not folder or not os.path.isdir(str(folder))):
            _fail("ssl_checkpoints_dir", folder, "an existing folder holding task<k>/ checkpoints (<encoder output>/save)")

    for key in ("number_of_epochs", "batch_size"):
        if key in hparams and not (isinstance(hparams[key], int) and hparams[key] > 0):
            _fail(key, hparams[key], "a positive integer")


def _computed(value):
    """Whether a previewed value is built when the YAML is loaded (a tagged node, e.g. ``!apply:``)."""
    return str(getattr(getattr(value, "tag", None), "value", None) or "").startswith("!")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
