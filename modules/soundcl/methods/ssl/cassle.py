"""CaSSLe distillation (Fini et al., 2022) as cssl_sound's ``cassle_simclr.py``,
``cassle_moco.py``, ``cassle_BarlowTwins.py`` and ``hparams/us8k/cassiam_train.yaml`` use it.

From task 1 on, a frozen copy of the previous task's encoder, ``prev``,
embeds the same (augmented) features as the current encoder; a trainable
predictor ``prev_predictor`` maps the current embedding to it, and the loss
gains ``dist_weight * dist_cost(prev_predictor(h), prev(x))``:

* ``dist_cost: mse`` - mean squared error (``torch.nn.MSELoss``: the original's
  ``cassle_simclr``, ``cassle_moco``, ``cassle_BarlowTwins``);
* ``dist_cost: neg_cosine`` - minus the mean cosine similarity (``cassiam_train.yaml``'s
  ``CosineSimilarity`` cost, minimised as SimSiam's).

Each view is distilled (the mean over both; MoCo: view 1, the only one its
query encoder sees). At task 0 there is no previous encoder and the term is 0.

Task boundaries, as the original: ``prev`` is loaded at the start of task
``k`` from the final checkpoint of task ``k - 1`` (``save/task<k-1>/``), so a
resumed run distils from the right task whatever the live weights hold; the
predictor starts afresh (re-initialised) every task and is a recoverable of
the task's checkpoints (``checkpoint_recoverables``), so a resumed task
continues with it. The original's ``dist_set: buffer`` (distilling on replayed
clips drawn apart from the batch) is not reproduced.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from soundcl.methods.ssl.barlow import BarlowTwins
from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.base.contract import REQUIRED
from soundcl.methods.ssl.moco import MoCo
from soundcl.models.encoders import make_norm
from soundcl.methods.ssl.base import SimCLR, SimSiam
from soundcl.methods.ssl.sup_term import SupervisedTerm
from soundcl.core.task_loop import FINAL_CKPT_NAME

DIST_COSTS = ("mse", "neg_cosine")


class CasslePredictor(nn.Module):
    """The original's ``CasslePredictor``: ``Linear -> norm -> ReLU -> Linear -> norm ->
    Linear(no bias) -> norm -> ReLU -> Linear`` (hidden, hidden, bottleneck, output sizes).

    forward: embeddings [batch, input_size] -> [batch, output_size].
    """

    def __init__(self, input_size, hidden_size, bottleneck_size, output_size, norm_type="bn"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            make_norm(norm_type, hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, hidden_size),
            make_norm(norm_type, hidden_size),
            nn.Linear(hidden_size, bottleneck_size, bias=False),
            make_norm(norm_type, bottleneck_size),
            nn.ReLU(inplace=True),
            nn.Linear(bottleneck_size, output_size),
        )

    def forward(self, emb):
        return self.net(emb)


def distillation_cost(predicted, target, kind):
    """predicted, target [batch, dim] (target without gradient) -> scalar cost ``kind`` (DIST_COSTS)."""
    if kind == "mse":
        return F.mse_loss(predicted.float(), target.detach().float())
    if kind == "neg_cosine":
        return -F.cosine_similarity(predicted.float(), target.detach().float(), dim=-1).mean()
    raise ValueError(f"unknown dist_cost {kind!r}: expected one of {', '.join(DIST_COSTS)}")


def _plain(module):
    return getattr(module, "module", module)


class CaSSLe:
    """Mixin put before an SSL Brain: adds ``dist_weight`` x the CaSSLe distillation term.

    Modules: those of the SSL Brain plus ``prev_predictor``; the frozen previous
    encoder is this Brain's ``prev_embedding_model`` (not a module: no optimizer,
    no checkpoint of its own).
    """

    HPARAMS = {"dist_weight": REQUIRED, "dist_cost": REQUIRED}

    prev_embedding_model = None

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        if self.hparams.dist_cost not in DIST_COSTS:
            raise ValueError(f"dist_cost must be one of {', '.join(DIST_COSTS)}, got {self.hparams.dist_cost!r}")
        self.prev_embedding_model = None
        # Unused at task 0: out of the optimizer (and of DDP's gradient reduction) there.
        for param in self.modules.prev_predictor.parameters():
            param.requires_grad = task_id > 0
        if task_id == 0:
            return
        self.prev_embedding_model = self.load_previous_encoder(task_id - 1)
        # A fresh predictor every task (the original builds a new one).
        for layer in _plain(self.modules.prev_predictor).modules():
            if layer is not _plain(self.modules.prev_predictor) and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def load_previous_encoder(self, task_id):
        """A frozen copy of the encoder with the final weights of finished task ``task_id``."""
        prev = copy.deepcopy(_plain(self.modules.embedding_model))
        checkpointer = SafeCheckpointer(self.task_dir(task_id), recoverables={"embedding_model": prev})
        if checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME)) is None:
            raise FileNotFoundError(f"CaSSLe: {self.task_dir(task_id)} holds no final checkpoint "
                                    f"of task {task_id} to distil from")
        for param in prev.parameters():
            param.requires_grad = False
        return prev.to(self.device).eval()

    def two_view_features(self, batch, stage):
        feats, lens, perm, lam = super().two_view_features(batch, stage)
        self._dist_inputs = (feats, lens)
        return feats, lens, perm, lam

    def compute_forward(self, batch, stage):
        outputs = super().compute_forward(batch, stage)
        if self.prev_embedding_model is None:
            return outputs
        feats, lens = self._dist_inputs
        emb = outputs["emb"]
        rows, half = emb.shape[0], feats.shape[0] // 2  # rows: 2B (both views) or B (view 1)
        with torch.no_grad():
            self.prev_embedding_model.eval()
            target = self.prev_embedding_model(feats[:rows], lens[:rows])
        # The predictor sees one view at a time (its BatchNorm statistics per view, as the original).
        outputs["dist_predicted"] = torch.cat([self.modules.prev_predictor(view) for view in emb.split(half)])
        outputs["dist_target"] = target
        return outputs

    def ssl_objectives(self, outputs, batch, stage):
        loss, parts = super().ssl_objectives(outputs, batch, stage)
        if "dist_predicted" in outputs:
            dist = distillation_cost(outputs["dist_predicted"], outputs["dist_target"], self.hparams.dist_cost)
        else:
            dist = torch.zeros((), device=loss.device)
        parts["dist"] = dist.detach()
        return loss + self.hparams.dist_weight * dist, parts


class CassleSimCLR(CaSSLe, SupervisedTerm, SimCLR):
    """cssl_sound ``cassle_simclr.py``: sup + SimCLR + CaSSLe.
    Modules: ``embedding_model``, ``projector``, ``classifier``, ``prev_predictor``."""


class CassleMoCo(CaSSLe, SupervisedTerm, MoCo):
    """cssl_sound ``cassle_moco.py``: sup + MoCo + CaSSLe (view 1 distilled).
    Modules: ``embedding_model``, ``projector``, ``classifier``, ``prev_predictor``."""


class CassleBarlowTwins(CaSSLe, SupervisedTerm, BarlowTwins):
    """cssl_sound ``cassle_BarlowTwins.py``: sup + Barlow Twins + CaSSLe.
    Modules: ``embedding_model``, ``projector``, ``predictor``, ``classifier``, ``prev_predictor``."""


class CaSSiam(CaSSLe, SupervisedTerm, SimSiam):
    """cssl_sound ``hparams/us8k/cassiam_train.yaml``: sup + SimSiam + CaSSLe (negative cosine).
    Modules: ``embedding_model``, ``projector``, ``predictor``, ``classifier``, ``prev_predictor``."""
