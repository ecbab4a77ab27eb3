"""Label distillation next to SupCLR (cssl_sound's ``sup_labeldist.py``): LwF on the classifier outputs.

Loss: ``sup_weight`` x CE + ``ssl_weight`` x NT-Xent (:class:`soundcl.methods.ssl.base.SupCLR`)
+ ``dist_weight`` x KL(softmax(teacher / dist_tau) || softmax(student / dist_tau)),
batch mean (the original's ``LwFDistillationLoss``: KL summed, divided by the batch
size; no T^2 factor). Teacher: a frozen copy of the previous task's
``embedding_model`` + ``classifier`` (eval mode), reloaded from
``save/task<k-1>/CKPT+final`` at ``begin_task`` so a resumed run distils from the
same model (:func:`soundcl.methods.supervised.lwf.load_frozen_model`); it sees the
student's view-1 features (same crop, augmentation and mixup). Task 0 has no
teacher: the term is 0.

``dist_classes``: ``all`` (the original: the KL runs over every output of the
classifier, with the student's raw logits, i.e. without soundcl's masking of
unseen classes) or ``old`` (the classes of tasks before the current one, as
soundcl's LwF). ``dist_set``: the original can distil on memory clips
(``buffer``); only ``null`` (the training batch, the original's default) is
implemented.
"""
import torch

import speechbrain as sb

from soundcl.core.brains import UNSEEN_LOGIT
from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.methods.ssl.base import SimCLR, SupCLR
from soundcl.methods.supervised.lwf import distillation_loss, load_frozen_model

DIST_CLASSES = ("all", "old")


class SupCLRLabelDist(SupCLR):
    """:class:`soundcl.methods.ssl.base.SupCLR` + LwF distillation of the previous task's classifier outputs."""

    HPARAMS = {
        "dist_weight": REQUIRED,
        "dist_tau": REQUIRED,  # temperature of the distillation softmax (original: 2.0)
        "dist_classes": "all",  # all (original) or old
        "dist_set": None,  # distil on the training batch (the original's default)
        "save_folder": REQUIRED,
        "task_dir_format": "task{}",
    }

    teacher = None  # {"embedding_model", "classifier"} of task k-1, frozen; None at task 0
    teacher_logits = None  # [batch, n_classes] of the last training batch (view 1)

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        if self.hparams.dist_classes not in DIST_CLASSES:
            raise ConfigError(f"dist_classes={self.hparams.dist_classes!r} is not valid: expected one of "
                              f"{', '.join(DIST_CLASSES)}")
        if self.hparams.dist_set is not None:
            raise ConfigError(f"dist_set={self.hparams.dist_set!r} is not implemented: only null (distil on "
                              "the training batch)")
        self.old_classes = sorted(c for j in range(self.task_id) for c in self.task_classes[j])
        self.teacher = load_frozen_model(self, self.task_id - 1) if self.task_id > 0 else None

    def heads(self, emb):
        outputs = SimCLR.heads(self, emb)
        raw = self.modules.classifier(emb)
        outputs["raw_logits"] = raw  # what the original distils ("all")
        outputs["logits"] = raw.masked_fill(~self.seen_mask(raw.device), UNSEEN_LOGIT)
        return outputs

    def compute_forward(self, batch, stage):
        feats, lens, perm, lam = self.two_view_features(batch, stage)
        emb = self.encode_views(feats, lens)
        outputs = self.heads(emb)
        outputs.update(emb=emb, perm=perm, lam=lam)
        self.teacher_logits = None
        if stage == sb.Stage.TRAIN and self.teacher is not None:
            half = feats.shape[0] // 2
            with torch.no_grad():
                self.teacher_logits = self.teacher["classifier"](
                    self.teacher["embedding_model"](feats[:half], lens[:half])).float()
        return outputs

    def ssl_objectives(self, outputs, batch, stage):
        loss, parts = super().ssl_objectives(outputs, batch, stage)
        if stage != sb.Stage.TRAIN:
            return loss, parts
        dist = torch.zeros((), device=loss.device)
        if self.teacher_logits is not None:
            student = outputs["raw_logits"].chunk(2)[0]
            if self.hparams.dist_classes == "old":
                classes, student = self.old_classes, outputs["logits"].chunk(2)[0]
            else:
                classes = list(range(student.shape[-1]))
            dist = distillation_loss(student, self.teacher_logits, classes, self.hparams.dist_tau)
        parts["dist"] = dist.detach()
        return loss + self.hparams.dist_weight * dist, parts
