"""Checks of a recipe's configuration before anything is built or trained.

A wrong value should fail at start, in one line that names the key, the value
and what is allowed, not hours later deep inside a batch. The checks run on
the YAML with the command-line overrides applied but no object built yet
(:func:`preview_hparams`), so even values consumed by ``!new:`` objects are
checked first.
"""
import difflib
import os

import ruamel.yaml
from hyperpyyaml import resolve_references

from soundcl.base.contract import ConfigError
from soundcl.models.ascl_bcresnet import REPLAY_ENCODERS
from soundcl.models.encoders import ENCODER_KINDS

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
    "two_view_forward": ("separate", "joint"),
    "embedding_head": ("pool", "fc"),
    "valid_replay": ("fraction", "count"),
    "sup_loss_views": ("first", "both"),
    "encoder_checkpoint": ("last", "final"),
    "encoder": ENCODER_KINDS,
    "replay_encoder": REPLAY_ENCODERS,
    "backbone": ("passt", "dsmn"),
    # soundcl.methods.supervised.strategies.STRATEGIES (recipes/sup_train.py)
    "strategy": ("finetune_or_replay", "joint", "joint_incremental", "lwf", "ewc", "er_ace", "derpp", "gdumb", "icarl"),
}




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

    if "task_classes" in hparams and hparams["task_classes"] is not None:
        from soundcl.data.splits import validate_task_classes

        n_classes = hparams.get("n_classes")
        try:
            validate_task_classes([list(t) for t in hparams["task_classes"]], n_classes)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"task_classes={_plain(hparams['task_classes'])} is not valid: {err}") from None

    if hparams.get("mode", "replay") != "finetune" and "memory_size" in hparams:
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
        if not folder or not os.path.isdir(str(folder)):
            _fail("ssl_checkpoints_dir", folder, "an existing folder holding task<k>/ checkpoints (<encoder output>/save)")

    for key in ("number_of_epochs", "batch_size"):
        if key in hparams and not (isinstance(hparams[key], int) and hparams[key] > 0):
            _fail(key, hparams[key], "a positive integer")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
