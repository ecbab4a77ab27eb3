"""Training objectives shared by the soundcl methods.

* :func:`mixup_cross_entropy` - supervised cross-entropy with mixup targets;
* :func:`nt_xent` - the SimCLR (NT-Xent) contrastive loss over ``2B`` views;
* :func:`simsiam_loss` - SimSiam's symmetric negative cosine with stop-gradient;
* :func:`embedding_spread` - the collapse watch statistic;
* :func:`alignment_uniformity` - Wang and Isola's (2020) alignment and uniformity of two views.
"""
import torch
import torch.nn.functional as F


def mixup_cross_entropy(logits, targets, perm=None, lam=1.0):
    """Cross-entropy with mixup targets.

    Arguments
    ---------
    logits : torch.Tensor, shape [batch, n_classes]
    targets : torch.Tensor, shape [batch] (long)
    perm : torch.Tensor, shape [batch], optional
        Mixup partner of each example (``None``: plain cross-entropy).
    lam : float
        Weight of the example itself; ``1 - lam`` goes to its partner.

    Returns
    -------
    torch.Tensor, scalar.
    """
    loss = F.cross_entropy(logits, targets)
    if perm is not None:
        loss = lam * loss + (1.0 - lam) * F.cross_entropy(logits, targets[perm])
    return loss


def nt_xent(z1, z2, tau=0.5):
    """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

    The ``2B`` projections are L2-normalised; for each one the positive is the
    other view of the same clip and the negatives are the other ``2B - 2``.

    Arguments
    ---------
    z1, z2 : torch.Tensor, shape [batch, dim]
        Projections of view 1 and view 2; row ``i`` of both comes from clip ``i``.
    tau : float
        Temperature (> 0).

    Returns
    -------
    torch.Tensor, scalar: the mean over the ``2B`` anchors.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent expects two [batch, dim] tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("nt_xent needs at least 2 clips per batch (no negatives otherwise)")
    if tau <= 0:
        raise ValueError(f"nt_xent temperature must be positive, got {tau}")
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # [2B, dim]
    sim = z @ z.t() / tau  # [2B, 2B]
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return F.cross_entropy(sim, positives)


def negative_cosine(p, z):
    """Mean negative cosine similarity of ``p`` to ``z``, with no gradient into ``z``.

    p, z : torch.Tensor, shape [batch, dim]. Returns a scalar in [-1, 1].
    """
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def simsiam_loss(p1, p2, z1, z2):
    """SimSiam's symmetric loss ``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2``.

    Arguments
    ---------
    p1, p2 : torch.Tensor, shape [batch, dim]
        Predictor outputs of view 1 and view 2.
    z1, z2 : torch.Tensor, shape [batch, dim]
        Projector outputs (targets; the stop-gradient branch).

    Returns
    -------
    torch.Tensor, scalar in [-1, 1] (-1: perfectly aligned).
    """
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


@torch.no_grad()
def embedding_spread(z):
    """Mean per-dimension standard deviation of the L2-normalised rows of ``z``.

    z : torch.Tensor, shape [batch, dim]. Returns a float: 0 when every row points
    the same way (collapse), about ``1 / sqrt(dim)`` for well spread outputs.
    """
    if z.shape[0] < 2:
        return 0.0
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())


@torch.no_grad()
def alignment_uniformity(emb, t=2.0):
    """Alignment and uniformity (Wang and Isola 2020, alpha 2) of a two-view batch.

    The rows are L2-normalised first. ``align`` is the mean squared distance of the
    positive pairs (0: both views map to the same point; 2 for independent random
    directions; 4: opposite points); ``uniform`` is ``log mean exp(-t |x - y|^2)``
    over the pairs of distinct clips of one view, averaged over the two views as the
    paper's code does (0 when every row is the same point, about
    ``-2 t + 2 t^2 / dim`` for random directions in ``dim`` dimensions, -4 t = -8 at t 2
    for two clips at opposite points: lower is more uniform).

    Arguments
    ---------
    emb : torch.Tensor, shape [2 * batch, dim] (view 1 rows, then view 2 rows)
    t : float

    Returns
    -------
    dict of floats: ``align``, ``uniform``.
    """
    if emb.dim() != 2 or emb.shape[0] < 4 or emb.shape[0] % 2:
        raise ValueError(f"alignment_uniformity expects [2 * batch, dim] with batch >= 2, got {tuple(emb.shape)}")
    x = F.normalize(emb.float(), dim=1)
    first, second = x.chunk(2)
    align = (first - second).pow(2).sum(dim=1).mean()
    uniform = 0.5 * sum(torch.pdist(view).pow(2).mul(-t).exp().mean().log() for view in (first, second))
    return {"align": float(align), "uniform": float(uniform)}
