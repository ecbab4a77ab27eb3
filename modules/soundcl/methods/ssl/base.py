"""Continual self-supervised training: SimCLR, SimSiam and SupCLR Brains.

Every Brain here sees two views of each clip: two independent training crops
(``sig`` and ``sig_view1`` from :func:`soundcl.data.audio.make_dataset` with
``n_views=2``), each turned into filterbanks and augmented independently by the
YAML's ``augmentation`` (:class:`soundcl.data.augment.TimeFreqAugment`).

``two_view_forward`` says how the views meet the BatchNorm layers:
``separate`` (the research code's, zhepeiw/cssl_sound ``*_train.py``: the
encoder and the heads run once per view, so each view is a batch of ``B``
with its own batch statistics) or ``joint`` (one batch of ``2B``: one pass,
statistics shared by both views).

Heads (as the research code): SimCLR and SupCLR compute NT-Xent on
``predictor(projector(h))`` (``use_predictor: False`` drops the predictor);
SimSiam predicts one view's projection from the other. With
``constant_predictor_lr`` the predictor keeps ``base_lr`` while the rest
follows the warm-up + cosine schedule (all three original recipes do).

Checkpoints and model selection: there is no classifier accuracy to select an
epoch with, so each epoch's checkpoint carries its epoch number and
``best_key = ("epoch", "max")`` keeps the last epoch as the task's final
checkpoint (as the published recipes do).

Testing: row ``k`` of the accuracy matrix is a training-free cosine kNN
accuracy of the frozen encoder: the bank is the encoder embeddings of the
training clips of tasks ``0..k`` (full clips, no augmentation, with their
labels), the queries are the test clips of task ``j``. Linear evaluation of the
saved ``embedding_model`` is the other protocol (a separate recipe).

Validation (when a validation set exists): the SSL loss between a clean and an
augmented copy of each full validation clip, logged only.
"""
import logging
from collections import defaultdict

import numpy as np
import torch

import speechbrain as sb

from soundcl.results import metrics
from soundcl.core.brains import UNSEEN_LOGIT, ContinualFeatureBrain
from soundcl.base.contract import REQUIRED
from soundcl.core.losses import alignment_uniformity, embedding_spread, mixup_cross_entropy, nt_xent, simsiam_loss
from soundcl.core.ddp import unwrap as unwrap_ddp  # a second view through the wrapper would re-broadcast BN buffers in place

logger = logging.getLogger(__name__)

#: How the two views go through the BatchNorm layers (``two_view_forward``).
TWO_VIEW_FORWARDS = ("separate", "joint")


def two_view_mixup(feats, alpha):
    """Mixup applied alike to both halves of a two-view batch.

    Both views of clip ``i`` are mixed with the same partner and weight, so
    they stay a positive pair.

    Arguments
    ---------
    feats : torch.Tensor, shape [2 * batch, ...] (view 1 rows, then view 2 rows)
    alpha : float

    Returns
    -------
    mixed feats (same shape), partner permutation [batch], weight lam.
    """
    half = feats.shape[0] // 2
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(half, device=feats.device)
    both = torch.cat([perm, perm + half])
    return lam * feats + (1.0 - lam) * feats[both], perm, lam


def knn_classify(queries, bank, bank_labels, n_classes, k=20, temperature=0.07):
    """Predicted classes [n_queries] of :func:`soundcl.methods.evaluation.knn.knn_scores` (similarity-weighted cosine kNN)."""
    from soundcl.methods.evaluation.knn import knn_scores

    return knn_scores(queries, bank, bank_labels, n_classes, k=k, temperature=temperature).argmax(dim=1)


class SSLBrain(ContinualFeatureBrain):
    """Shared machinery of the self-supervised Brains.

    Subclasses implement :meth:`heads` (embeddings -> outputs) and
    :meth:`ssl_objectives` (outputs -> loss and logged parts).

    """

    future_eval_unsupported = ("kNN test: the bank holds the training clips of the tasks seen so far, "
                               "so a future task's classes have no neighbour")

    HPARAMS = {
        "lr_scheduler": REQUIRED,  # soundcl.core.schedulers.WarmupCosineLR, stepped per batch
        "use_mixup": REQUIRED,
        "mixup_alpha": REQUIRED,
        "train_logger": REQUIRED,
        "knn_k": REQUIRED,  # neighbours of the kNN test (row k of the matrix)
        "knn_temperature": REQUIRED,
        # separate: each view is its own batch of B through encoder and heads (cssl_sound);
        # joint: both views as one batch of 2B (shared BatchNorm statistics).
        "two_view_forward": REQUIRED,
        # True: the predictor (if any) keeps base_lr, no schedule (cssl_sound, SimSiam paper Sec. 4.1).
        "constant_predictor_lr": REQUIRED,
    }

    n_train_views = 2
    best_key = ("epoch", "max")
    has_valid_set = True
    current_lr = float("nan")  # learning rate of the last batch (logged per epoch)
    knn_bank = None  # (embeddings, labels) of the training clips of tasks 0..k, set by before_testing

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        loader = super().make_dataloader(dataset, stage, ckpt_prefix=ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:
            # The schedule's length comes from the current task's data.
            self.steps_per_epoch = len(loader)
        return loader

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.hparams.two_view_forward not in TWO_VIEW_FORWARDS:
            raise ValueError(
                f"two_view_forward must be one of {', '.join(TWO_VIEW_FORWARDS)}, got {self.hparams.two_view_forward!r}"
            )

    def parameter_groups(self):
        """The predictor in its own ``fixed_lr`` group when ``constant_predictor_lr`` (and there is one)."""
        if not self.hparams.constant_predictor_lr or "predictor" not in self.modules:
            return super().parameter_groups()
        fixed = [p for p in self.modules["predictor"].parameters() if p.requires_grad]
        fixed_ids = {id(p) for p in fixed}
        rest = [p for p in self.modules.parameters() if p.requires_grad and id(p) not in fixed_ids]
        return [{"params": rest}, {"params": fixed, "fixed_lr": True}]

    def per_view(self, module, x):
        """Apply ``module`` to [2B, ...] (view 1 rows, then view 2 rows) as ``two_view_forward`` says.

        ``separate``: once per view (BatchNorm statistics of each view's B rows); ``joint``: once on all 2B.
        """
        if self.hparams.two_view_forward == "joint":
            return module(x)
        first, second = x.chunk(2)
        return torch.cat([module(first), unwrap_ddp(module)(second)])

    def fit(self, epoch_counter, train_set, valid_set=None, *args, **kwargs):
        self.has_valid_set = valid_set is not None
        return super().fit(epoch_counter, train_set, valid_set, *args, **kwargs)

    def on_fit_batch_start(self, batch, should_step):
        if should_step:
            self.current_lr = self.hparams.lr_scheduler(self.optimizer, self.steps_per_epoch)

    # ------------------------------------------------------------- forward
    def two_view_embeddings(self, batch, stage):
        """Encoder embeddings of both views.

        Returns
        -------
        emb [2 * batch, emb_dim] (view 1 rows, then view 2 rows), lens [2 * batch],
        mixup permutation [batch] or None, mixup weight.
        """
        feats, both_lens, perm, lam = self.two_view_features(batch, stage)
        return self.encode_views(feats, both_lens), both_lens, perm, lam

    def two_view_features(self, batch, stage):
        """Features of both views (what :meth:`two_view_embeddings` encodes).

        Returns
        -------
        feats [2 * batch, frames, n_mels] (view 1 rows, then view 2 rows), lens [2 * batch],
        mixup permutation [batch] or None, mixup weight.
        """
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN:
            wavs2, lens2 = batch.sig_view1
            both_lens = torch.cat([lens, lens2])
            if self.hparams.two_view_forward == "joint":
                # One pass for both crops: one normaliser update, per-example augmentation.
                feats = self.compute_feats(torch.cat([wavs, wavs2]), both_lens, stage)
            else:  # one feature pass per view, as the original's prepare_features(x1), (x2)
                feats = torch.cat([self.compute_feats(wavs, lens, stage), self.compute_feats(wavs2, lens2, stage)])
        else:
            feats = self.compute_feats(wavs, lens, stage)
            augmentation = self.hparams.augmentation
            feats = torch.cat([feats, augmentation(feats) if augmentation is not None else feats])
            both_lens = torch.cat([lens, lens])
        perm, lam = None, 1.0
        if stage == sb.Stage.TRAIN and self.hparams.use_mixup:
            feats, perm, lam = two_view_mixup(feats, self.hparams.mixup_alpha)
        return feats, both_lens, perm, lam

    def encode_views(self, feats, lens):
        """feats [2B, frames, n_mels] (view 1 rows, then view 2) -> emb [2B, emb_dim].

        ``two_view_forward: separate`` runs each view as its own batch of B (cssl_sound: its
        BatchNorm statistics are per view); ``joint`` runs one batch of 2B.
        """
        if self.hparams.two_view_forward == "joint":
            return self.modules.embedding_model(feats, lens)
        half = feats.shape[0] // 2
        encoder = self.modules.embedding_model
        return torch.cat([encoder(feats[:half], lens[:half]), unwrap_ddp(encoder)(feats[half:], lens[half:])])

    def compute_forward(self, batch, stage):
        emb, _, perm, lam = self.two_view_embeddings(batch, stage)
        outputs = self.heads(emb)
        outputs.update(emb=emb, perm=perm, lam=lam)
        return outputs

    def compute_objectives(self, predictions, batch, stage):
        loss, parts = self.ssl_objectives(predictions, batch, stage)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite {type(self).__name__} loss at task {self.task_id}: parts {parts}")
        if stage == sb.Stage.TRAIN:  # what the linear probe will see: the encoder embeddings' geometry
            parts.update({f"{k}_emb": v for k, v in alignment_uniformity(predictions["emb"]).items()})
        for name, value in parts.items():
            self.stage_parts[name] += float(value)
        self.stage_batches += 1
        return loss

    def heads(self, emb):
        """emb [2B, emb_dim] -> dict of head outputs."""
        raise NotImplementedError

    def ssl_objectives(self, outputs, batch, stage):
        """-> (loss, dict of floats logged per epoch: ``ssl``, ``sup``, ``spread`` ...)."""
        raise NotImplementedError

    # -------------------------------------------------------------- stages
    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.stage_parts = defaultdict(float)
        self.stage_batches = 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        stats.update({name: total / max(1, self.stage_batches) for name, total in self.stage_parts.items()})
        if stage == sb.Stage.VALID and self.targets:
            stats["acc"] = self.stage_accuracy()
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            if not self.has_valid_set:
                self._end_of_epoch(epoch, None)
        elif stage == sb.Stage.VALID:
            self.last_stage_stats = stats
            self._end_of_epoch(epoch, stats)

    def _end_of_epoch(self, epoch, valid_stats):
        self.hparams.train_logger.log_stats(
            stats_meta={"task": self.task_id, "epoch": epoch, "lr": self.current_lr},
            train_stats=self.train_stats,
            valid_stats=valid_stats,
        )
        meta = {"epoch": epoch, **{f"train_{k}": float(v) for k, v in self.train_stats.items()}}
        meta.update({f"valid_{k}": float(v) for k, v in (valid_stats or {}).items()})
        self.checkpointer.save_and_keep_only(meta=meta, max_keys=["epoch"], num_to_keep=1)

    # ------------------------------------------------------------- testing
    @torch.no_grad()
    def extract_embeddings(self, dataset, loader_kwargs):
        """Encoder embeddings of full clips, no augmentation.

        Returns
        -------
        embeddings [n_clips, emb_dim], labels [n_clips] (long), on ``self.device``.
        """
        loader = self.make_dataloader(dataset, sb.Stage.TEST, ckpt_prefix=None, **dict(loader_kwargs))
        self.modules.eval()
        embeddings, labels = [], []
        for batch in loader:
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            embeddings.append(self.embed(wavs, lens, sb.Stage.TEST).float())
            labels.append(torch.as_tensor(batch.class_idx, dtype=torch.long, device=self.device))
        if not embeddings:
            raise ValueError("no clips to embed")
        return torch.cat(embeddings), torch.cat(labels)

    def before_testing(self, train_rows, loader_kwargs):
        """Embed the training clips of the seen tasks: the kNN bank."""
        self.knn_bank = self.extract_embeddings(self.make_task_dataset(train_rows, train=False), loader_kwargs)

    def evaluate_accuracy(self, dataset, loader_kwargs):
        """Cosine kNN accuracy (bank from :meth:`before_testing`) and confusion matrix."""
        if self.knn_bank is None:
            raise RuntimeError("evaluate_accuracy needs the kNN bank: call before_testing first")
        queries, targets = self.extract_embeddings(dataset, loader_kwargs)
        bank, bank_labels = self.knn_bank
        from soundcl.methods.evaluation.knn import knn_scores

        scores = knn_scores(queries, bank, bank_labels, self.hparams.n_classes,
                            k=self.hparams.knn_k, temperature=self.hparams.knn_temperature)
        self.targets, self.predictions, self.til_predictions = [], [], []
        self.record_predictions(scores, targets)  # knn_classify's argmax, and the task-IL one
        confusion = metrics.confusion_matrix(self.targets, self.predictions, self.hparams.n_classes)
        return self.stage_accuracy(), confusion


class SimCLR(SSLBrain):
    """SimCLR: NT-Xent (temperature ``tau``) between the outputs of the two views.

    The outputs are ``predictor(projector(h))`` as in the research code
    (cssl_sound ``simclr_train.py`` / ``supclr_train.py``), or
    ``projector(h)`` with ``use_predictor: False``.

    Modules: ``embedding_model``, ``projector``, ``predictor`` (with ``use_predictor``).
    """

    HPARAMS = {
        "tau": REQUIRED,
        # True: NT-Xent on predictor(projector(h)) (cssl_sound); False: on projector(h).
        "use_predictor": REQUIRED,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.hparams.use_predictor and "predictor" not in self.modules:
            raise ValueError(f"use_predictor is True but the YAML's modules have no predictor (modules: {sorted(self.modules)})")

    def heads(self, emb):
        z = self.per_view(self.modules.projector, emb)
        if self.hparams.use_predictor:
            z = self.per_view(self.modules.predictor, z)
        z1, z2 = z.chunk(2)
        return {"z1": z1, "z2": z2}

    def ssl_objectives(self, outputs, batch, stage):
        if stage != sb.Stage.TRAIN and outputs["z1"].shape[0] < 2:
            # The last validation batch may hold one clip (small one-class tasks): NT-Xent has no
            # negatives there; the validation loss is logged only, so that batch adds 0.
            ssl = outputs["z1"].sum() * 0.0
        else:
            ssl = nt_xent(outputs["z1"], outputs["z2"], self.hparams.tau)
        return ssl, {"ssl": ssl.detach(), "spread": embedding_spread(torch.cat([outputs["z1"], outputs["z2"]]))}


class SimSiam(SSLBrain):
    """SimSiam: negative cosine between each view's prediction and the other's
    projection, with stop-gradient on the projection.

    Modules: ``embedding_model``, ``projector``, ``predictor``.
    """

    def heads(self, emb):
        z = self.per_view(self.modules.projector, emb)
        p = self.per_view(self.modules.predictor, z)
        z1, z2 = z.chunk(2)
        p1, p2 = p.chunk(2)
        return {"z1": z1, "z2": z2, "p1": p1, "p2": p2}

    def ssl_objectives(self, outputs, batch, stage):
        ssl = simsiam_loss(outputs["p1"], outputs["p2"], outputs["z1"], outputs["z2"])
        return ssl, {"ssl": ssl.detach(), "spread": embedding_spread(torch.cat([outputs["z1"], outputs["z2"]]))}


class SupCLR(SimCLR):
    """``sup_weight`` x cross-entropy (mixup targets) + ``ssl_weight`` x NT-Xent.

    ``--ssl_weight=1 --sup_weight=0`` is pure SimCLR. As the research code
    (cssl_sound ``supclr_train.py``), by default the cross-entropy is over all
    ``n_classes`` (``mask_unseen_classes: False``) and on view 1 only
    (``sup_loss_views: first``); ``mask_unseen_classes: True`` restricts it
    to the classes seen so far, ``sup_loss_views: both`` averages it over the
    two views. Modules: ``embedding_model``, ``projector``, ``predictor``,
    ``classifier``.
    """

    HPARAMS = {
        "sup_weight": REQUIRED,
        "ssl_weight": REQUIRED,
        # False: softmax over all n_classes (cssl_sound); True: classes of tasks 0..k only.
        "mask_unseen_classes": REQUIRED,
        # first: cross-entropy of view 1 (cssl_sound); both: mean of the two views'.
        "sup_loss_views": REQUIRED,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.hparams.sup_loss_views not in ("first", "both"):
            raise ValueError(f"sup_loss_views must be first or both, got {self.hparams.sup_loss_views!r}")

    def heads(self, emb):
        outputs = super().heads(emb)
        logits = self.modules.classifier(emb)
        if self.hparams.mask_unseen_classes:
            logits = logits.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        outputs["logits"] = logits
        return outputs

    def ssl_objectives(self, outputs, batch, stage):
        ssl, parts = super().ssl_objectives(outputs, batch, stage)
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=outputs["logits"].device)
        logits1, logits2 = outputs["logits"].float().chunk(2)
        perm, lam = outputs["perm"], outputs["lam"]
        sup = mixup_cross_entropy(logits1, targets, perm, lam)
        if self.hparams.sup_loss_views == "both":
            sup = 0.5 * (sup + mixup_cross_entropy(logits2, targets, perm, lam))
        if stage != sb.Stage.TRAIN:
            self.record_predictions(logits1.detach(), targets)  # view 1 is the clean clip outside training
        parts["sup"] = sup.detach()
        loss = self.hparams.sup_weight * sup + self.hparams.ssl_weight * ssl
        return loss, parts
