"""Cosine k-nearest-neighbour class scores: the one kNN rule of soundcl.

Used by the kNN scoring of the self-supervised recipes
(:func:`soundcl.methods.ssl.base.knn_classify`) and by the kNN evaluation of task-wise
checkpoints (:class:`soundcl.methods.evaluation.knn_eval.KnnEvalBrain`).

The default rule is the one of the original research code (zhepeiw/cssl_sound,
``knn_eval.py``, ``knn_predict``, itself from the UCL ``knn_monitor``, after Wu
et al. 2018): cosine similarities to the bank, the ``k`` most similar bank
clips, each weighted ``exp(cosine / temperature)``, summed per class; the
original evaluates with ``k = 200`` and ``temperature = 0.1``.
"""
import torch
import torch.nn.functional as F

#: ``exp``: similarity-weighted vote (the original's rule); ``vote``: majority
#: vote of the ``k`` neighbours, ties broken by the larger summed similarity.
KNN_RULES = ("exp", "vote")


def knn_scores(queries, bank, bank_labels, n_classes, k=200, temperature=0.1, rule="exp"):
    """Class scores of cosine kNN: the predicted class is their argmax.

    Arguments
    ---------
    queries : torch.Tensor, shape [n_queries, dim]
    bank : torch.Tensor, shape [n_bank, dim]
        Embeddings of the reference clips (need not be normalised).
    bank_labels : torch.Tensor, shape [n_bank] (long)
    n_classes : int
    k : int
        Neighbours (at most ``n_bank`` are used).
    temperature : float
        ``rule="exp"``: a neighbour weighs ``exp(cosine / temperature)``.
    rule : str
        ``"exp"`` (default, the original's) or ``"vote"`` (see :data:`KNN_RULES`).

    Returns
    -------
    torch.Tensor, shape [n_queries, n_classes] (float32); with ``rule="exp"``
    each row is scaled so that the nearest neighbour weighs 1.
    """
    if rule not in KNN_RULES:
        raise ValueError(f"unknown kNN rule {rule!r}: expected one of {KNN_RULES}")
    if bank.shape[0] == 0:
        raise ValueError("kNN bank is empty")
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).t()
    k = min(int(k), bank.shape[0])
    top_sim, top_idx = sim.topk(k, dim=1)  # [n_queries, k]
    if rule == "exp":
        # exp((cos - best cos) / T): the original's weights times one factor per query (same argmax), never inf.
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
    else:  # one vote each, plus a similarity term whose sum over the k neighbours stays below 1
        weights = 1.0 + (top_sim + 1.0) / (2.0 * (k + 1))
    scores = torch.zeros(queries.shape[0], n_classes, device=queries.device)
    return scores.scatter_add_(1, bank_labels.to(queries.device)[top_idx], weights)
