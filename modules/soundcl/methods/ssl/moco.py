"""MoCo (He et al., 2020) as cssl_sound's ``moco_train.py`` / ``supmoco_train.py`` train it.

* query: ``q = projector(embedding_model(view 1))``;
* key: ``k = key projector(key encoder(view 2))``, no gradient; before each
  training batch the key encoder moves towards the query encoder,
  ``key = m * key + (1 - m) * query`` (``moco_momentum``);
* loss: cross-entropy of ``[q.k, q.queue] / moco_temp`` with the positive key
  first; the queue ([dim, ``moco_dict_size``] negatives) then drops its
  oldest ``B`` columns and takes the batch's keys.

Task boundaries, as the original (a fresh ``init_moco`` per task): at the
start of every task the key encoder is a copy of the query encoder (which
holds the previous task's final weights) and the queue is random unit
vectors again. Within a task both live in :class:`MomentumKeyEncoder`, a
recoverable of every checkpoint of the task: a resumed task continues with the
key encoder and queue it was killed with.

Differences from the original, each on purpose: q and k are L2-normalised only
when ``moco_normalize`` is True (the original does not normalise; the MoCo
paper does); the key encoder and queue are updated in training batches only
(the original's recipes have no validation pass); the original's batch shuffle
is left out (one process: a permutation of the batch does not change BatchNorm).
"""
import copy

import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.base.contract import REQUIRED
from soundcl.core.losses import embedding_spread
from soundcl.methods.ssl.base import SSLBrain
from soundcl.methods.ssl.sup_term import SupervisedTerm


def _plain(module):
    """The module itself, not its DistributedDataParallel wrapper."""
    return getattr(module, "module", module)


class MomentumKeyEncoder(torch.nn.Module):
    """Key encoder (a frozen copy of encoder + projector) and the queue of negative keys.

    Arguments
    ---------
    embedding_model, projector : torch.nn.Module
        The query encoder and projector, copied.
    dim : int
        Size of the keys (the projector's output size).
    queue_size : int
        Number of negative keys (``moco_dict_size``).
    """

    def __init__(self, embedding_model, projector, dim, queue_size):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"moco_dict_size must be >= 1, got {queue_size}")
        self.embedding_model = copy.deepcopy(_plain(embedding_model))
        self.projector = copy.deepcopy(_plain(projector))
        for param in self.parameters():
            param.requires_grad = False
        # [dim, queue_size]: column j is a negative key.
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))

    @torch.no_grad()
    def momentum_update(self, embedding_model, projector, momentum):
        """``key = momentum * key + (1 - momentum) * query``, parameters only (as the original)."""
        for key_module, query_module in ((self.embedding_model, embedding_model), (self.projector, projector)):
            for key_param, query_param in zip(key_module.parameters(), _plain(query_module).parameters()):
                key_param.mul_(momentum).add_(query_param.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def forward(self, feats, lens):
        """feats [batch, frames, n_mels], lens [batch] -> keys [batch, dim]."""
        return self.projector(self.embedding_model(feats, lens))

    @torch.no_grad()
    def enqueue(self, keys):
        """Drop the oldest ``batch`` columns of the queue and append ``keys`` [batch, dim]."""
        batch = keys.shape[0]
        if batch > self.queue.shape[1]:
            raise ValueError(f"a batch of {batch} keys does not fit a queue of {self.queue.shape[1]} (moco_dict_size)")
        self.queue.copy_(torch.cat([self.queue[:, batch:], keys.detach().t().to(self.queue.dtype)], dim=1))


def moco_loss(q, k, queue, temperature):
    """InfoNCE of MoCo: the positive key ``k`` against the negatives of ``queue``.

    q, k : torch.Tensor, shape [batch, dim]; queue : [dim, n_negatives].
    Returns a scalar: cross-entropy with target 0 of ``[q.k, q.queue] / temperature``.
    """
    q, k = q.float(), k.float()
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.detach().clone().float()  # a copy: the queue changes in place after the loss
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCo(SSLBrain):
    """MoCo: the query encoder sees view 1, the momentum key encoder view 2.

    Modules: ``embedding_model``, ``projector``; the key encoder and queue are
    this Brain's :class:`MomentumKeyEncoder` (``key_encoder``).
    """

    HPARAMS = {
        "moco_momentum": REQUIRED,  # m of the key encoder update
        "moco_temp": REQUIRED,  # temperature of the InfoNCE logits
        "moco_dict_size": REQUIRED,  # negatives in the queue
        "moco_normalize": REQUIRED,  # True: L2-normalise q and k (MoCo paper); the original: False
        "proj_dim": REQUIRED,  # size of the keys
    }

    #: Checkpoint name of the key encoder and queue.
    KEY_ENCODER_CKPT = "moco_key_encoder"
    key_encoder = None
    query_views = 1  # the query encoder sees view 1 only (emb is [B, emb_dim])

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        # As the original's init_moco: a copy of the query encoder, a random queue.
        self.key_encoder = MomentumKeyEncoder(
            self.modules.embedding_model, self.modules.projector,
            int(self.hparams.proj_dim), int(self.hparams.moco_dict_size),
        ).to(self.device)

    def on_fit_start(self):
        # Registered before SpeechBrain recovers the task's last checkpoint (in
        # super().on_fit_start): a resumed task gets back its key encoder and queue.
        if self.key_encoder is None:
            raise RuntimeError("MoCo needs begin_task (the task loop calls it) before fit")
        self.checkpointer.recoverables[self.KEY_ENCODER_CKPT] = self.key_encoder
        super().on_fit_start()


    def compute_forward(self, batch, stage):
        feats, lens, perm, lam = self.two_view_features(batch, stage)
        half = feats.shape[0] // 2
        emb = self.modules.embedding_model(feats[:half], lens[:half])
        outputs = self.heads(emb)
        training = stage == sb.Stage.TRAIN
        self.key_encoder.train(training)
        if training:
            self.key_encoder.momentum_update(self.modules.embedding_model, self.modules.projector,
                                             self.hparams.moco_momentum)
        outputs["k"] = self.key_encoder(feats[half:], lens[half:])
        outputs.update(emb=emb, perm=perm, lam=lam)
        return outputs

    def heads(self, emb):
        return {"q": self.modules.projector(emb)}

    def ssl_objectives(self, outputs, batch, stage):
        q, k = outputs["q"], outputs["k"]
        if self.hparams.moco_normalize:
            q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
        ssl = moco_loss(q, k, self.key_encoder.queue, self.hparams.moco_temp)
        if stage == sb.Stage.TRAIN:
            self.key_encoder.enqueue(k)
        return ssl, {"ssl": ssl.detach(), "spread": embedding_spread(outputs["q"].detach())}


class SupMoCo(SupervisedTerm, MoCo):
    """SupMoCo (cssl_sound ``supmoco_train.py``): ``sup_weight`` x CE(classifier(h1)) +
    ``ssl_weight`` x MoCo. Modules: ``embedding_model``, ``projector``, ``classifier``.
    """
