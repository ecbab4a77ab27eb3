"""Brain subclasses: one per method, all driven by :class:`soundcl.core.task_loop.TaskLoop`."""
import logging

import numpy as np
import torch

import speechbrain as sb

from soundcl.base.contract import REQUIRED
from soundcl.core.continual import ContinualBrain
from soundcl.core.losses import mixup_cross_entropy
from soundcl.core.schedulers import WarmupCosineLR

logger = logging.getLogger(__name__)

# Logit given to classes not seen yet: finite so that fp16/bf16 stay finite.
UNSEEN_LOGIT = -1e4


def mixup(feats, alpha):
    """Mix each example with a random partner of the batch.

    Arguments
    ---------
    feats : torch.Tensor, shape [batch, ...]
    alpha : float
        Beta(alpha, alpha) parameter of the mixing weight.

    Returns
    -------
    mixed feats (same shape), the partner permutation [batch], the weight lam.
    """
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(feats.shape[0], device=feats.device)
    return lam * feats + (1.0 - lam) * feats[perm], perm, lam


class ContinualFeatureBrain(ContinualBrain):
    """Shared front end: waveform -> filterbanks -> normalisation -> (augmentation).

    Modules expected: ``compute_features`` (e.g. ``Fbank``), ``mean_var_norm``
    (``InputNormalization``), ``embedding_model``.
    """

    HPARAMS = {
        # A callable on [batch, time, n_mels] features, applied in training only (null: none).
        "augmentation": None,
        # > 0: re-estimate the encoder's BatchNorm statistics on this many training clips
        # before every validation ("precise BN"); 0: never.
        "recalibrate_bn_clips": 0,
        # True: augment the filterbanks before mean_var_norm (cssl_sound's prepare_features);
        # False: after it. The default keeps the recipes that predate the key unchanged.
        "augment_before_norm": False,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_dataset = None  # the current task's training set, for the BatchNorm recalibration

    def compute_feats(self, wavs, lens, stage, augment=True):
        """wavs [batch, samples], lens [batch] -> feats [batch, frames, n_mels]."""
        feats = self.modules.compute_features(wavs)
        augment = augment and stage == sb.Stage.TRAIN and self.hparams.augmentation is not None
        if augment and self.hparams.augment_before_norm:
            feats = self.hparams.augmentation(feats)
        feats = self.modules.mean_var_norm(feats, lens, epoch=self.hparams.epoch_counter.current)
        if augment and not self.hparams.augment_before_norm:
            feats = self.hparams.augmentation(feats)
        return feats

    def embed(self, wavs, lens, stage):
        """wavs [batch, samples] -> embeddings [batch, emb_dim], no augmentation outside TRAIN."""
        return self.modules.embedding_model(self.compute_feats(wavs, lens, stage), lens)

    def make_dataloader(self, dataset, stage, *args, **kwargs):
        if stage == sb.Stage.TRAIN:
            self.train_dataset = dataset  # for the BatchNorm recalibration below
        return super().make_dataloader(dataset, stage, *args, **kwargs)

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.VALID and self.hparams.recalibrate_bn_clips:
            self.recalibrate_batchnorm(int(self.hparams.recalibrate_bn_clips))
        super().on_stage_start(stage, epoch)

    @torch.no_grad()
    def recalibrate_batchnorm(self, n_clips, batch_size=16):
        """Re-estimate the encoder's BatchNorm statistics on ``n_clips`` training clips.

        In short runs the running averages lag the fast-changing weights, so a
        deep encoder can score well in train mode and at chance in eval mode;
        a pass with the final weights ("precise BN", ``torch.optim.swa_utils.update_bn``)
        fixes the statistics. Clips are fixed (evenly spaced over the training
        set), so reruns are identical.
        """
        from speechbrain.dataio.batch import PaddedBatch
        from torch.optim.swa_utils import update_bn

        dataset = self.train_dataset
        if dataset is None or len(dataset) == 0:
            return
        self.modules.mean_var_norm.eval()  # the normaliser keeps its statistics
        indices = sorted(set(np.linspace(0, len(dataset) - 1, min(n_clips, len(dataset))).astype(int).tolist()))

        def feature_batches():
            for start in range(0, len(indices), batch_size):
                batch = PaddedBatch([dataset[i] for i in indices[start : start + batch_size]]).to(self.device)
                wavs, lens = batch.sig
                yield self.compute_feats(wavs, lens, sb.Stage.VALID)

        update_bn(feature_batches(), self.modules.embedding_model)


class ClassifierStages:
    """Objectives and epoch ends of every Brain that trains a classifier over the seen classes.

    ``compute_forward`` returns ``(logits [batch, n_classes], perm, lam)``
    (``perm=None`` without mixup).
    """

    # lr_annealing: a SpeechBrain annealing called once per epoch (after validation), or a
    # soundcl.core.schedulers.WarmupCosineLR, then stepped before every update (cssl_sound's schedule).
    HPARAMS = {"lr_annealing": REQUIRED, "train_logger": REQUIRED}
    train_stats = None  # statistics of the last training epoch
    current_lr = float("nan")  # per-batch schedules: learning rate of the last update

    @property
    def lr_per_batch(self):
        """Whether ``lr_annealing`` is a per-update schedule (:class:`soundcl.core.schedulers.WarmupCosineLR`)."""
        return isinstance(self.hparams.lr_annealing, WarmupCosineLR)

    def make_dataloader(self, dataset, stage, *args, **kwargs):
        loader = super().make_dataloader(dataset, stage, *args, **kwargs)
        if stage == sb.Stage.TRAIN:
            self.steps_per_epoch = len(loader)  # the per-batch schedule's length comes from the task's data
        return loader

    def on_fit_batch_start(self, batch, should_step):
        if should_step and self.lr_per_batch:
            self.current_lr = self.hparams.lr_annealing(self.optimizer, self.steps_per_epoch)
        return super().on_fit_batch_start(batch, should_step)

    def set_learning_rate(self, lr):
        """Apply the annealed learning rate (subclasses with parameter groups scale theirs)."""
        sb.nnet.schedulers.update_learning_rate(self.optimizer, lr)

    def compute_objectives(self, predictions, batch, stage):
        logits, perm, lam = predictions
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        loss = mixup_cross_entropy(logits.float(), targets, perm, lam)
        if stage != sb.Stage.TRAIN:
            self.record_predictions(logits.detach(), targets)
        return loss

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["acc"] = self.stage_accuracy()
        self.last_stage_stats = stats
        if stage == sb.Stage.VALID:
            if self.lr_per_batch:
                old_lr = self.current_lr
            else:
                old_lr, new_lr = self.hparams.lr_annealing(epoch)
                self.set_learning_rate(new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"task": self.task_id, "epoch": epoch, "lr": old_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"acc": stats["acc"], "loss": stats["loss"]}, max_keys=["acc"], num_to_keep=1
            )


class SupervisedBrain(ClassifierStages, ContinualFeatureBrain):
    """Supervised class-incremental training: cross-entropy over the seen classes.

    The task loop gives it the current task plus the replay memory
    (:class:`soundcl.core.task_data.CurrentTaskWithMemory`).
    """

    HPARAMS = {
        "use_mixup": REQUIRED,
        "mixup_alpha": REQUIRED,
        # True: classes not seen yet get UNSEEN_LOGIT (the recipes that predate the key);
        # False: softmax over all n_classes (cssl_sound's sup_train). Strategies with their own
        # masking (lwf, er_ace, derpp, icarl, ewc) keep it.
        "mask_unseen_classes": True,
    }

    def mixed_features(self, batch, stage):
        """Features [batch, frames, n_mels] (in training, mixed up), lens, and the mixup info."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        feats = self.compute_feats(wavs, lens, stage)
        perm, lam = None, 1.0
        if stage == sb.Stage.TRAIN and self.hparams.use_mixup:
            feats, perm, lam = mixup(feats, self.hparams.mixup_alpha)
        return feats, lens, perm, lam

    def mixed_embeddings(self, batch, stage):
        """Embeddings [batch, emb_dim] of the (in training, mixed-up) features, and the mixup info."""
        feats, lens, perm, lam = self.mixed_features(batch, stage)
        return self.modules.embedding_model(feats, lens), perm, lam

    def compute_forward(self, batch, stage):
        """Returns logits [batch, n_classes] (unseen classes masked with ``mask_unseen_classes``), and mixup info."""
        emb, perm, lam = self.mixed_embeddings(batch, stage)
        logits = self.modules.classifier(emb)
        if self.hparams.mask_unseen_classes:
            logits = logits.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        return logits, perm, lam
