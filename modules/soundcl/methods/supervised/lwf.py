"""Learning without Forgetting (Li & Hoiem 2016), class-incremental form.

Loss: cross-entropy over the seen classes + ``lwf_alpha`` x KL(teacher || student)
of the softmax over the *old* classes (those of tasks before the current one)
at temperature ``lwf_temperature`` (batch mean, no T^2 factor, as Avalanche's LwF).
The teacher is a frozen copy of the previous task's model, reloaded from
``save/task<k-1>/CKPT+final`` at ``begin_task`` (so a resumed run uses exactly
the same one); it sees the student's features (same crop, augmentation, mixup
and the shared input normaliser), in eval mode.
"""
import copy

import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.base.contract import REQUIRED

#: Modules the teacher copies (the front end, including the normaliser, is shared).
TEACHER_MODULES = ("embedding_model", "classifier")


def load_frozen_model(brain, task_id, names=TEACHER_MODULES):
    """Frozen copies (eval mode, no grad) of ``names`` with task ``task_id``'s final weights."""
    models = {name: copy.deepcopy(getattr(brain.hparams, name)) for name in names}
    checkpointer = SafeCheckpointer(brain.task_dir(task_id), recoverables=models)
    if checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get("final")) is None:
        raise FileNotFoundError(f"no final checkpoint of task {task_id} in {brain.task_dir(task_id)}")
    for model in models.values():
        model.eval().requires_grad_(False)
    return models


def distillation_loss(student_logits, teacher_logits, classes, temperature):
    """KL(softmax(teacher / T) || softmax(student / T)) over ``classes``, batch mean."""
    log_p = F.log_softmax(student_logits[:, classes].float() / temperature, dim=-1)
    q = F.softmax(teacher_logits[:, classes].float() / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean")


class TeacherBrain(SupervisedBrain):
    """SupervisedBrain that also runs the previous task's frozen model on each training batch.

    ``self.teacher_logits`` [batch, n_classes]: the teacher's logits on the same (mixed)
    features, None at task 0 and outside training. Shared by LwF and iCaRL.
    """

    HPARAMS = {"save_folder": REQUIRED, "task_dir_format": "task{}"}

    teacher = None  # {"embedding_model", "classifier"} of the previous task, frozen
    teacher_logits = None
    last_distillation = 0.0  # distillation term of the last training batch (for tests)

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.old_classes = sorted(c for j in range(self.task_id) for c in self.task_classes[j])
        self.teacher = load_frozen_model(self, self.task_id - 1) if self.task_id > 0 else None

    def compute_forward(self, batch, stage):
        feats, lens, perm, lam = self.mixed_features(batch, stage)
        logits = self.modules.classifier(self.modules.embedding_model(feats, lens))
        logits = logits.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        self.teacher_logits = None
        if stage == sb.Stage.TRAIN and self.teacher is not None:
            with torch.no_grad():
                self.teacher_logits = self.teacher["classifier"](self.teacher["embedding_model"](feats, lens))
        return logits, perm, lam


class LwFBrain(TeacherBrain):
    HPARAMS = {"lwf_alpha": REQUIRED, "lwf_temperature": REQUIRED}

    def compute_objectives(self, predictions, batch, stage):
        loss = super().compute_objectives(predictions, batch, stage)
        if stage != sb.Stage.TRAIN:
            return loss
        distill = torch.zeros((), device=loss.device)
        if self.teacher_logits is not None:
            distill = distillation_loss(predictions[0], self.teacher_logits, self.old_classes,
                                        self.hparams.lwf_temperature)
        self.last_distillation = float(distill.detach())
        return loss + self.hparams.lwf_alpha * distill
