"""Task-wise encoder checkpoints of another run, loaded for linear / kNN evaluation.

Any recipe that trains an encoder task by task leaves
``<encoder_output>/save/task{k}/CKPT+final/`` with ``embedding_model`` and
``normalizer`` files; ``ssl_checkpoints_dir`` names that ``save`` folder.

Which checkpoint of task ``k`` (``encoder_checkpoint``): ``last``, the most
recent one, i.e. the last epoch's (cssl_sound's linclf_train.py /
knn_eval.py recover the newest checkpoint of the task folder): ``CKPT+final``
when it is the last epoch's (self-supervised runs always), else ``CKPT+last``
(kept by runs with ``keep_last_checkpoint: True``); ``final``, the task's
final (best-validation) checkpoint.
"""
import os
import re

import torch
from speechbrain.processing.features import InputNormalization

from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.core.task_loop import FINAL_CKPT_NAME, LAST_CKPT_NAME

#: Values of ``encoder_checkpoint``.
ENCODER_CHECKPOINTS = ("last", "final")


def encoder_tasks_found(checkpoints_dir):
    """Sorted task indices ``k`` with a ``task{k}`` folder in ``checkpoints_dir``."""
    if not os.path.isdir(checkpoints_dir):
        return []
    found = [re.fullmatch(r"task(\d+)", name) for name in os.listdir(checkpoints_dir)]
    return sorted(int(m.group(1)) for m in found if m)


def check_state_dict_shapes(module, path, name):
    """Raise a ValueError naming both shapes when ``path`` does not fit ``module``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = module.state_dict()
    if not isinstance(state, dict):
        return
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the {name} of the hparams: parameters missing from the "
            f"checkpoint {missing[:5]}, unexpected {unexpected[:5]} (is it the same architecture?)"
        )
    for key, value in state.items():
        if hasattr(value, "shape") and tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{path}: {name} parameter {key!r} has shape {tuple(value.shape)} in the checkpoint "
                f"but {tuple(expected[key].shape)} with the hparams (set the encoder hparams, e.g. "
                f"emb_dim / encoder_channels / n_mels, to those the encoder was trained with)"
            )


def load_final_encoder(checkpoints_dir, task_id, recoverables):
    """Load the ``CKPT+final`` of ``<checkpoints_dir>/task{task_id}`` into ``recoverables``."""
    return load_encoder(checkpoints_dir, task_id, recoverables, which="final")


def load_encoder(checkpoints_dir, task_id, recoverables, which="last"):
    """Load the ``which`` checkpoint of ``<checkpoints_dir>/task{task_id}`` into ``recoverables``.

    Arguments
    ---------
    checkpoints_dir : str
        The ``save`` folder of the encoder's run.
    task_id : int
    recoverables : dict name -> object (``embedding_model``, ``normalizer``)
    which : str
        ``last`` (the last epoch's weights) or ``final`` (see the module docstring).

    Returns
    -------
    The SpeechBrain ``Checkpoint`` loaded.
    """
    if which not in ENCODER_CHECKPOINTS:
        raise ValueError(f"encoder_checkpoint must be one of {', '.join(ENCODER_CHECKPOINTS)}, got {which!r}")
    folder = os.path.join(checkpoints_dir, f"task{task_id}")
    if not os.path.isdir(folder):
        found = encoder_tasks_found(checkpoints_dir)
        raise FileNotFoundError(
            f"no encoder checkpoint for task {task_id}: expected the folder {folder}; "
            f"tasks found in {checkpoints_dir}: {found if found else 'none'} "
            f"(ssl_checkpoints_dir must be the save/ folder of an encoder run with every task finished)"
        )
    checkpointer = SafeCheckpointer(folder, recoverables=recoverables)
    final = checkpointer.find_checkpoint(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME))
    if final is None:
        raise FileNotFoundError(
            f"{folder} holds no final checkpoint (CKPT+final): task {task_id} of the encoder run is not finished"
        )
    ckpt = final
    if which == "last" and not final.meta.get(LAST_CKPT_NAME):
        ckpt = checkpointer.find_checkpoint(
            ckpt_predicate=lambda c: c.meta.get(LAST_CKPT_NAME) and not c.meta.get(FINAL_CKPT_NAME)
        )
        if ckpt is None:
            raise FileNotFoundError(
                f"{folder}: encoder_checkpoint=last asks for the last epoch's encoder, but CKPT+final is not the "
                f"last epoch's and there is no CKPT+last (train the encoder with --keep_last_checkpoint=True, "
                f"or evaluate its final checkpoint with --encoder_checkpoint=final)"
            )
    for name, obj in recoverables.items():
        if name not in ckpt.paramfiles:
            raise FileNotFoundError(
                f"{ckpt.path} has no {name}.ckpt (it has {sorted(ckpt.paramfiles)})"
            )
        # InputNormalization saves statistics, not a state dict; a feature-size
        # mismatch is caught by the encoder's input layer.
        if isinstance(obj, torch.nn.Module) and not isinstance(obj, InputNormalization):
            check_state_dict_shapes(obj, ckpt.paramfiles[name], name)
    checkpointer.load_checkpoint(ckpt)
    return ckpt
