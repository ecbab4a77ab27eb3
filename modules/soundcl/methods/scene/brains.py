"""Brains of the acoustic-scene recipes: DSMN multi-task training and SIT transfer.

:class:`SceneBrain` extends :class:`soundcl.core.brains.SupervisedBrain` with
- an optional scene-group head (``group_classifier`` module + ``scene_groups``
  hparam, loss ``mix_rate * scene + (1 - mix_rate) * group``),
- device-wise test accuracy (TAU 2022 Mobile's devices a, b, c, s1-s6, read from
  the clip IDs), written to ``device_accuracy.json`` in the task folder,
- knowledge distillation when ``teacher_logits`` ({clip ID: logits}, see
  :mod:`soundcl.ondevice.distill`) is set: ``(1 - kd_weight) * loss + kd_weight * KD``.

:class:`SITBrain` is the slow learner with incremental transfer: every task of
the shared :class:`soundcl.core.task_loop.TaskLoop` is a *stage* with its own label
set (e.g. CochlScene, then TAU 2022); at a stage change the heads are
re-initialised and the backbone keeps its weights; from stage
``slow_learner_from_stage`` on, the backbone learns at ``backbone_lr`` and the
heads at ``head_lr`` (separate optimizer parameter groups). ``backbone_lr ==
head_lr`` is the Seq-FT baseline.
"""
import json
import logging
import os

import torch

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain, mixup_cross_entropy
from soundcl.base.contract import REQUIRED

logger = logging.getLogger(__name__)

#: Recording devices of TAU Urban Acoustic Scenes 2022 Mobile (last token of a file name).
TAU22_DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
DEVICE_ACCURACY_FILE = "device_accuracy.json"


def device_of(clip_id):
    """Device of a TAU 2022 clip from its ID (``airport-lisbon-1000-40000-0-a`` -> ``a``), else None."""
    token = os.path.splitext(os.path.basename(str(clip_id)))[0].rsplit("-", 1)[-1]
    return token if token in TAU22_DEVICES else None


class SceneBrain(SupervisedBrain):
    """Supervised scene classification with an optional scene-group head and device-wise accuracy.

    """

    future_eval_unsupported = ("scene recipes (DSMN, SIT) keep one per-device accuracy entry per test set of "
                               "tasks 0..k (device_accuracy.json); SIT's stages have their own label sets and heads")

    HPARAMS = {
        # Group index of every class index (null: no group head).
        "scene_groups": None,
        # Weight of the scene loss against the group loss (used with scene_groups).
        "mix_rate": 1.0,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        groups = self.hparams.scene_groups
        self.class_to_group = None
        if groups is not None and "group_classifier" in self.modules:
            if len(groups) != self.hparams.n_classes:
                raise ValueError(
                    f"scene_groups has {len(groups)} entries, expected one group index per class "
                    f"(n_classes={self.hparams.n_classes})"
                )
            self.class_to_group = torch.as_tensor(groups, dtype=torch.long)
        # {clip ID: teacher logits [n_classes]} (soundcl.ondevice.distill.teacher_logits); None: no distillation.
        self.teacher_logits = None

    def compute_forward(self, batch, stage):
        """Returns scene logits [batch, n_classes] (unseen masked), group logits [batch, n_groups] or None, mixup info."""
        emb, perm, lam = self.mixed_embeddings(batch, stage)
        logits = self.modules.classifier(emb).masked_fill(~self.seen_mask(emb.device), UNSEEN_LOGIT)
        group_logits = self.modules.group_classifier(emb) if self.class_to_group is not None else None
        return logits, group_logits, perm, lam

    def compute_objectives(self, predictions, batch, stage):
        logits, group_logits, perm, lam = predictions
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        loss = mixup_cross_entropy(logits.float(), targets, perm, lam)
        if group_logits is not None:
            group_targets = self.class_to_group.to(targets.device)[targets]
            group_loss = mixup_cross_entropy(group_logits.float(), group_targets, perm, lam)
            loss = self.hparams.mix_rate * loss + (1.0 - self.hparams.mix_rate) * group_loss
        if stage == sb.Stage.TRAIN and self.teacher_logits is not None:
            loss = (1.0 - self.hparams.kd_weight) * loss + self.hparams.kd_weight * self.distillation_loss(
                logits, batch.id, perm, lam)
        if stage != sb.Stage.TRAIN:
            self.record_predictions(logits.detach(), targets)
            correct = (logits.argmax(-1) == targets).tolist()
            for clip_id, ok in zip(batch.id, correct):
                device = device_of(clip_id)
                if device is not None:
                    hits, total = self.device_counts.get(device, (0, 0))
                    self.device_counts[device] = (hits + int(ok), total + 1)
        return loss

    def distillation_loss(self, logits, clip_ids, perm=None, lam=1.0):
        """KD term of the student's logits [batch, n_classes] against the clips' cached teacher logits."""
        from soundcl.ondevice.distill import kd_loss

        teacher = torch.stack([self.teacher_logits[i] for i in clip_ids]).to(logits.device)
        # Classes not seen yet are out of both distributions (the student's are masked already).
        teacher = teacher.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        return kd_loss(logits, teacher, self.hparams.kd_temperature, perm, lam)

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.device_results = []

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.device_counts = {}

    def device_accuracy(self):
        """{device: accuracy} of the last VALID/TEST stage, devices in TAU order."""
        return {d: self.device_counts[d][0] / self.device_counts[d][1] for d in TAU22_DEVICES if d in self.device_counts}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.TEST:
            # One entry per test set evaluated after this task (tasks 0..k).
            self.device_results.append(self.device_accuracy())
            if if_main_process() and self.checkpointer is not None:
                path = os.path.join(str(self.checkpointer.checkpoints_dir), DEVICE_ACCURACY_FILE)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(self.device_results, f, indent=1)


class SITBrain(SceneBrain):
    """Slow learner with incremental transfer: one task of the loop per stage.

    """

    HPARAMS = {
        # Classes of each stage, in the order of the tasks (indices of stage k follow stage k-1's).
        "stage_n_classes": REQUIRED,
        "lr": REQUIRED,  # every parameter, stages before slow_learner_from_stage
        "backbone_lr": REQUIRED,  # later stages
        "head_lr": REQUIRED,
        "slow_learner_from_stage": REQUIRED,
        "backbone_checkpoint": None,  # local weights of the backbone, loaded before stage 0
        "subset": REQUIRED,  # % of the last stage's training split (reported in sit_results.json)
    }

    head_names = ("classifier", "group_classifier")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        checkpoint = self.hparams.backbone_checkpoint
        if checkpoint:
            # Stage 0 starts from these weights; later stages and resumed runs
            # load their own checkpoints over them.
            load_backbone_checkpoint(self.modules.embedding_model, checkpoint)

    def stage_classes(self, stage):
        sizes = list(self.hparams.stage_n_classes)
        start = sum(sizes[:stage])
        return list(range(start, start + sizes[stage]))

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        current = self.stage_classes(task_id)
        new = [c for c in self.seen_classes if c >= current[0]]
        if not set(new) <= set(current):
            raise ValueError(
                f"stage {task_id}: stage_n_classes={list(self.hparams.stage_n_classes)} gives classes "
                f"{current[0]}..{current[-1]}, but the data of this stage has classes {new}"
            )
        # Each stage predicts among its own label set only.
        self.seen_classes = current
        if task_id > 0:
            # New label set: fresh heads (seeded by the loop); the backbone keeps its weights.
            for name in self.head_names:
                if name in self.modules:
                    for module in self.modules[name].modules():
                        if hasattr(module, "reset_parameters") and module is not self.modules[name]:
                            module.reset_parameters()
            logger.info("stage %d: heads re-initialised, backbone kept", task_id)

    def stage_learning_rates(self):
        """(backbone lr, head lr) of the current stage."""
        if self.task_id < self.hparams.slow_learner_from_stage:
            return self.hparams.lr, self.hparams.lr
        return self.hparams.backbone_lr, self.hparams.head_lr

    def parameter_groups(self):
        """Backbone and heads in two groups, at the current stage's learning rates."""
        head_ids = {
            id(p) for name in self.head_names if name in self.modules for p in self.modules[name].parameters()
        }
        params = [p for p in self.modules.parameters() if p.requires_grad]
        backbone_lr, head_lr = self.stage_learning_rates()
        return [
            {"params": [p for p in params if id(p) not in head_ids], "lr": backbone_lr, "initial_lr": backbone_lr,
             "name": "backbone"},
            {"params": [p for p in params if id(p) in head_ids], "lr": head_lr, "initial_lr": head_lr, "name": "head"},
        ]

    def set_learning_rate(self, lr):
        # The annealing schedule runs on ``lr``; each group follows it proportionally.
        factor = lr / self.hparams.lr
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor


def load_backbone_checkpoint(module, path):
    """Load local backbone weights into ``module``; returns ``module``.

    Accepts a plain state dict or one wrapped as ``{"model": ...}`` /
    ``{"state_dict": ...}``, with or without a ``module.`` (DDP) prefix.
    Weights are never downloaded: a missing file is an error.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone checkpoint {path!r} not found (weights are never downloaded; give a local file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"backbone checkpoint {path!r} does not match the backbone: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return module
