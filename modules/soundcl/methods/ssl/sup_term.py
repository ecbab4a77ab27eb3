"""The supervised term of the cssl_sound "Sup" recipes (SupSiam, SupMoCo, SupBarlowTwins, CaSSLe).

``loss = sup_weight * CE(classifier(h1)) + ssl_weight * SSL loss``: the
classifier sees the encoder embedding ``h1`` of view 1 only (as the original
``o1 = classifier(h1)``), over the seen classes, with mixup targets when
``use_mixup``. ``--sup_weight=0`` leaves the SSL method alone (the classifier
then gets no gradient); outside training view 1 is the clean clip, whose
predictions give the logged validation accuracy.

:class:`SupervisedTerm` is a mixin put before an :class:`soundcl.methods.ssl.base.SSLBrain`
subclass; it needs a ``classifier`` module.
"""
import torch

import speechbrain as sb

from soundcl.core.brains import UNSEEN_LOGIT
from soundcl.base.contract import REQUIRED
from soundcl.core.losses import mixup_cross_entropy
from soundcl.methods.ssl.base import SimSiam


class SupervisedTerm:
    """Adds ``sup_weight`` x cross-entropy of ``classifier(h1)`` to ``ssl_weight`` x the SSL loss."""

    HPARAMS = {"sup_weight": REQUIRED, "ssl_weight": REQUIRED}

    def view1_embeddings(self, emb):
        """The view-1 rows [B, emb_dim] of ``emb``: its first half when the query
        encoder saw both views ([2B, emb_dim], view 1 rows first), all of it when
        the Brain sets ``query_views = 1`` (MoCo's query encoder sees view 1 only)."""
        if getattr(self, "query_views", 2) == 1:
            return emb
        return emb[: emb.shape[0] // 2]

    def heads(self, emb):
        outputs = super().heads(emb)
        logits = self.modules.classifier(self.view1_embeddings(emb))
        outputs["logits"] = logits.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        return outputs

    def ssl_objectives(self, outputs, batch, stage):
        ssl, parts = super().ssl_objectives(outputs, batch, stage)
        logits = outputs["logits"].float()
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        sup = mixup_cross_entropy(logits, targets, outputs["perm"], outputs["lam"])
        if stage != sb.Stage.TRAIN:
            self.record_predictions(logits.detach(), targets)
        parts["sup"] = sup.detach()
        return self.hparams.sup_weight * sup + self.hparams.ssl_weight * ssl, parts


class SupSiam(SupervisedTerm, SimSiam):
    """SupSiam (cssl_sound ``supsiam_train.py``): SimSiam + the supervised term.

    Modules: ``embedding_model``, ``projector``, ``predictor``, ``classifier``.
    """
