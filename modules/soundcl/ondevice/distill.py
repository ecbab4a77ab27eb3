"""Knowledge distillation from a teacher's logits (DSMN recipe: ``teacher``, ``kd_weight``, ``kd_temperature``).

The teacher is either

- a soundcl run's output folder (``hyperparams.yaml`` + ``save/``), e.g. a PaSST
  ``sit_train`` run (its last stage's classes) or a ``sup_train`` run on the same classes:
  its final model of the last task scores every clip once, with its OWN front
  end and audio pipeline (sample rate, features), on the whole clip, in eval mode;
- or a file of stored logits: ``torch.save({clip ID: logits [n_classes]})``.

The logits are computed once per clip and cached in
``<save_folder>/teacher_logits.pt`` (a resumed run reads them back): training
crops of one clip all learn from the clip's logits, every epoch.

Loss (:func:`kd_loss`): ``(1 - kd_weight) * supervised + kd_weight * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``, the soft-target term of
Hinton et al. (2015) as the DCASE 2023 low-complexity systems use it.
"""
import contextlib
import logging
import os
import random

import numpy as np
import torch
import torch.nn.functional as F

from soundcl.base.atomic import atomic_path

logger = logging.getLogger(__name__)

TEACHER_LOGITS_FILE = "teacher_logits.pt"

#: What the recipe reads.
HPARAMS = {
    "teacher": None,  # null: no distillation; a soundcl output folder or a stored-logits file
    "kd_weight": 0.0,  # weight of the distillation term (with a teacher)
    "kd_temperature": 1.0,
}


def check_hparams(hparams):
    if hparams["teacher"] and not 0.0 < float(hparams["kd_weight"]) <= 1.0:
        raise ValueError(f"kd_weight={hparams['kd_weight']}: with a teacher it must be in (0, 1]")
    if float(hparams["kd_temperature"]) <= 0:
        raise ValueError(f"kd_temperature={hparams['kd_temperature']} must be > 0")


def kd_loss(student_logits, teacher_logits, temperature, perm=None, lam=1.0):
    """T^2 * KL(teacher || student) at temperature T, averaged over the batch.

    With mixup (``perm``, ``lam``) the teacher's soft targets are mixed like the inputs.
    student_logits, teacher_logits: [batch, n_classes].
    """
    t = float(temperature)
    targets = F.softmax(teacher_logits.float() / t, dim=-1)
    if perm is not None:
        targets = lam * targets + (1.0 - lam) * targets[perm]
    log_student = F.log_softmax(student_logits.float() / t, dim=-1)
    return F.kl_div(log_student, targets, reduction="batchmean") * t * t


@contextlib.contextmanager
def _kept_random_state():
    """Building the teacher's YAML re-seeds the generators (``__set_seed``): keep the student's."""
    states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def load_teacher_run(folder):
    """(hparams, modules) of a finished soundcl run, final weights of its last task, eval mode, CPU."""
    from hyperpyyaml import load_hyperpyyaml

    from soundcl.base.checkpoints import SafeCheckpointer
    from soundcl.core.task_loop import FINAL_CKPT_NAME

    hparams_file = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(f"teacher {folder!r}: no hyperparams.yaml (give a soundcl run's output folder "
                                f"or a stored-logits .pt file)")
    with _kept_random_state(), open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, {"prepare_data": None, "augmentation": None})
    n_tasks = len(hparams.get("task_classes") or hparams["stage_n_classes"])
    task_dir = os.path.join(hparams["save_folder"], hparams.get("task_dir_format", "task{}").format(n_tasks - 1))
    checkpointer = SafeCheckpointer(task_dir, recoverables=hparams["checkpoint_recoverables"])
    if checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME)) is None:
        raise FileNotFoundError(f"teacher {folder!r}: {task_dir} holds no final checkpoint (is the run finished?)")
    modules = torch.nn.ModuleDict({k: hparams[k] for k in ("compute_features", "mean_var_norm", "embedding_model",
                                                             "classifier")}).cpu().eval()
    return hparams, modules


def teacher_class_offset(teacher_hparams, n_classes, folder=""):
    """Index of the teacher's logit for the student's class 0.

    0 when both have ``n_classes``; for a SIT teacher (``stage_n_classes``, e.g. CochlScene 13 +
    TAU 2022 10) whose last stage has the student's class count, that stage's first index (its
    classes in their order). Anything else is an error.
    """
    n_teacher = int(teacher_hparams["n_classes"])
    stages = teacher_hparams.get("stage_n_classes")
    if n_teacher == int(n_classes):
        return 0
    if stages and int(stages[-1]) == int(n_classes):
        offset = sum(int(n) for n in stages[:-1])
        logger.info("teacher %s: SIT run, its last stage's logits %d..%d are the student's classes", folder,
                    offset, offset + int(n_classes) - 1)
        return offset
    raise ValueError(f"teacher {folder!r} has n_classes={n_teacher} (stages {stages}), the student {n_classes}: "
                     f"distillation needs the same classes")


@torch.no_grad()
def run_teacher(folder, rows, n_classes, batch_size=16):
    """{clip ID: logits [n_classes]} of the teacher run in ``folder`` on whole clips of ``rows``."""
    from speechbrain.dataio.dataloader import make_dataloader

    from soundcl.data.audio import make_dataset

    hparams, modules = load_teacher_run(folder)
    first = teacher_class_offset(hparams, n_classes, folder)
    loader = make_dataloader(make_dataset(rows, hparams["audio"], train=False), batch_size=batch_size)
    logits = {}
    for batch in loader:
        wavs, lens = batch.sig
        feats = modules.mean_var_norm(modules.compute_features(wavs), lens)
        out = modules.classifier(modules.embedding_model(feats, lens))[:, first : first + int(n_classes)]
        logits.update({clip_id: row.float().clone() for clip_id, row in zip(batch.id, out)})
    logger.info("teacher %s scored %d clips", folder, len(logits))
    return logits


def teacher_logits(teacher, rows, n_classes, save_folder):
    """{clip ID: logits [n_classes]} for every clip of ``rows``: read from the cache, or computed once and cached."""
    cache = os.path.join(save_folder, TEACHER_LOGITS_FILE)
    ids = [row["ID"] for row in rows]
    logits = {}
    if os.path.isfile(cache):
        logits = torch.load(cache, map_location="cpu", weights_only=True)
    missing = [i for i in ids if i not in logits]
    if missing:
        if os.path.isdir(str(teacher)):
            wanted = set(missing)
            logits.update(run_teacher(teacher, [row for row in rows if row["ID"] in wanted], n_classes))
        elif os.path.isfile(str(teacher)):
            stored = torch.load(teacher, map_location="cpu", weights_only=True)
            absent = [i for i in missing if i not in stored]
            if absent:
                raise ValueError(f"teacher logits file {teacher!r} lacks {len(absent)} of the {len(ids)} clips "
                                 f"(e.g. {absent[0]!r})")
            logits.update({i: torch.as_tensor(stored[i], dtype=torch.float32) for i in missing})
        else:
            raise FileNotFoundError(f"teacher {teacher!r} not found: a soundcl run's output folder or a .pt file of "
                                    f"{{clip ID: logits}}")
        with atomic_path(cache, suffix=".tmp.pt") as tmp:
            torch.save(logits, tmp)
    shapes = {tuple(logits[i].shape) for i in ids}
    if shapes != {(int(n_classes),)}:
        raise ValueError(f"teacher logits have shapes {sorted(shapes)}, expected ({n_classes},)")
    return {i: logits[i] for i in ids}


def accuracy(logits, rows):
    """Top-1 accuracy of stored logits on ``rows`` (None when a clip has none)."""
    if not rows or any(row["ID"] not in logits for row in rows):
        return None
    hits = [int(logits[row["ID"]].argmax()) == int(row["class_idx"]) for row in rows]
    return sum(hits) / len(hits)


def teacher_accuracy(teacher, test_rows, n_classes, save_folder):
    """The teacher's test accuracy: a teacher run scores the test clips (cached too); a logits
    file gives it only if it holds every test clip (else None)."""
    if os.path.isfile(str(teacher)):
        stored = torch.load(teacher, map_location="cpu", weights_only=True)
        return accuracy(stored, test_rows)
    return accuracy(teacher_logits(teacher, test_rows, n_classes, save_folder), test_rows)


def cache_teacher_logits(teacher, train_rows, test_rows, n_classes, save_folder):
    """Fill the cache: the training clips' logits, and the test clips' when the teacher is a run."""
    teacher_logits(teacher, train_rows, n_classes, save_folder)
    if os.path.isdir(str(teacher)):
        teacher_logits(teacher, test_rows, n_classes, save_folder)
