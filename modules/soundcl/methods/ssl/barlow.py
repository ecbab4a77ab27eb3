"""Barlow Twins (Zbontar et al., 2021) as cssl_sound's ``supBarlowTwins_train.py`` trains it.

The two views go through ``projector`` then ``predictor`` (the original puts
its ``SimSiamPredictor`` after the projector, sized ``out_dim -> out_dim``);
the loss is the cross-correlation objective :func:`barlow_twins_loss` with the
original's ``lambda_rr`` and ``loss_scale``. With a ``classifier`` and
``sup_weight`` > 0 it is SupBarlowTwins (:class:`soundcl.methods.ssl.sup_term.SupervisedTerm`).
"""
import torch

from soundcl.base.contract import REQUIRED
from soundcl.core.losses import embedding_spread
from soundcl.methods.ssl.base import SSLBrain
from soundcl.methods.ssl.sup_term import SupervisedTerm


def barlow_twins_loss(z1, z2, lambda_rr=5e-3, loss_scale=1.0, eps=1e-8):
    """Barlow Twins' redundancy-reduction loss.

    Each dimension is standardised over the batch (unbiased std, as the
    original), ``C = z1n.T @ z2n / B`` is the [dim, dim] cross-correlation, and
    ``loss = loss_scale * (sum_i (1 - C_ii)^2 + lambda_rr * sum_{i != j} C_ij^2)``.

    Arguments
    ---------
    z1, z2 : torch.Tensor, shape [batch, dim]
        Outputs of view 1 and view 2 (row ``i`` of both from clip ``i``).
    lambda_rr : float
        Weight of the off-diagonal (redundancy) term.
    loss_scale : float
    eps : float
        Added to the standard deviations.

    Returns
    -------
    torch.Tensor, scalar.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"barlow_twins_loss expects two [batch, dim] tensors of one shape, "
                         f"got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("barlow_twins_loss needs at least 2 clips per batch (a standard deviation)")
    z1, z2 = z1.float(), z2.float()
    batch = z1.shape[0]
    z1n = (z1 - z1.mean(0)) / (z1.std(0) + eps)
    z2n = (z2 - z2.mean(0)) / (z2.std(0) + eps)
    corr = z1n.t() @ z2n / batch
    on_diag = (torch.diagonal(corr) - 1).pow(2).sum()
    off_diag = corr.pow(2).sum() - torch.diagonal(corr).pow(2).sum()
    return loss_scale * (on_diag + lambda_rr * off_diag)


class BarlowTwins(SSLBrain):
    """Barlow Twins on ``predictor(projector(h))`` of the two views.

    Modules: ``embedding_model``, ``projector``, ``predictor``.
    """

    HPARAMS = {"lambda_rr": REQUIRED, "loss_scale": REQUIRED}

    def heads(self, emb):
        z1, z2 = self.modules.predictor(self.modules.projector(emb)).chunk(2)
        return {"z1": z1, "z2": z2}

    def ssl_objectives(self, outputs, batch, stage):
        ssl = barlow_twins_loss(outputs["z1"], outputs["z2"], self.hparams.lambda_rr, self.hparams.loss_scale)
        return ssl, {"ssl": ssl.detach(), "spread": embedding_spread(torch.cat([outputs["z1"], outputs["z2"]]))}


class SupBarlowTwins(SupervisedTerm, BarlowTwins):
    """``sup_weight`` x CE(classifier(h1)) + ``ssl_weight`` x Barlow Twins (the original's class;
    its defaults ``ssl_weight: 1``, ``sup_weight: 0`` are plain Barlow Twins).

    Modules: ``embedding_model``, ``projector``, ``predictor``, ``classifier``.
    """
