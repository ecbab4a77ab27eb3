"""Classifiers learnt in closed form on a frozen encoder's embeddings: NCM (SimpleCIL) and RanPAC.

Both keep per-class statistics that a task only adds to, so learning task after task
without replay gives exactly what learning all tasks at once would
(``tests/test_frozen_cil.py`` checks it on numbers):

* :class:`NCMHead`, SimpleCIL's prototype classifier (Zhou et al. 2023, "Revisiting
  class-incremental learning with pre-trained models"; the ``use_RP=False`` branch of
  RanPAC's ``replace_fc``): a class's prototype is the mean embedding of its training
  clips, a clip's score the cosine similarity to each prototype.
* :class:`RanPACHead` (McDonnell et al., NeurIPS 2023, github.com/RanPAC/RanPAC,
  ``RanPAC.py``): a fixed Gaussian random projection ``W_rand`` [dim, M] with ReLU,
  ``h = relu(emb @ W_rand)``; per task the Gram matrix ``G += H^T H`` and
  ``C += H^T Y`` (``Y`` one-hot over all classes); the head ``W_out = (G + lambda I)^-1 C``
  by ``torch.linalg.solve`` (float64 here, float32 there); a clip's scores ``h @ W_out``.
  ``lambda``: the original's choice per task (:func:`select_ridge`), or a fixed value.

Pure tensor code: the Brains of :mod:`soundcl.methods.evaluation.frozen_cil` feed them.
"""
import numpy as np
import torch
import torch.nn.functional as F

#: RanPAC's ridge grid (``optimise_ridge_parameter``: ``10.0 ** np.arange(-8, 9)``).
RIDGE_GRID = tuple(float(10.0 ** e) for e in range(-8, 9))
#: The share of a task's training embeddings that fits the candidate heads (the rest scores them).
RIDGE_FIT_FRACTION = 0.8


class NCMHead:
    """Nearest class mean on cosine similarity (SimpleCIL).

    Arguments
    ---------
    n_classes : int
    dim : int, embedding size
    device : torch.device
    """

    def __init__(self, n_classes, dim, device="cpu"):
        self.n_classes = n_classes
        self.sums = torch.zeros(n_classes, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_classes, dtype=torch.float64, device=device)

    def update(self, emb, labels):
        """Add the embeddings [n, dim] of clips of classes ``labels`` [n] (long) to their classes' sums."""
        labels = labels.to(self.sums.device)
        self.sums.index_add_(0, labels, emb.to(self.sums).reshape(len(labels), -1))
        self.counts += torch.bincount(labels, minlength=self.n_classes).to(self.counts)

    def prototypes(self):
        """[n_classes, dim] float64: mean embedding of each class (zeros for a class not met)."""
        return self.sums / self.counts.clamp(min=1)[:, None]

    def scores(self, emb):
        """[n, n_classes] cosine similarities of ``emb`` [n, dim] to the prototypes (0 for a class not met)."""
        return (F.normalize(emb.to(self.sums), dim=1) @ F.normalize(self.prototypes(), dim=1).t()).float()


class RanPACHead:
    """Random projection + ReLU + ridge regression over all classes, updated task by task.

    Arguments
    ---------
    dim : int, embedding size
    n_projections : int, ``M`` (the original: 10000)
    n_classes : int
    seed : int, of the Gaussian projection ``W_rand`` [dim, M]
    device : torch.device
    """

    def __init__(self, dim, n_projections, n_classes, seed, device="cpu"):
        generator = torch.Generator().manual_seed(int(seed))
        self.n_classes = n_classes
        self.W_rand = torch.randn(dim, n_projections, generator=generator).to(device=device, dtype=torch.float64)
        self.G = torch.zeros(n_projections, n_projections, dtype=torch.float64, device=device)
        self.C = torch.zeros(n_projections, n_classes, dtype=torch.float64, device=device)
        self.W_out = None  # [M, n_classes] once solved
        self.ridge = None  # the lambda of the last solve

    def features(self, emb):
        """``relu(emb @ W_rand)``: [n, M] float64."""
        return torch.relu(emb.to(self.W_rand) @ self.W_rand)

    def targets(self, labels):
        """One-hot [n, n_classes] float64 of ``labels``."""
        return F.one_hot(labels.to(self.W_rand.device).long(), self.n_classes).to(self.W_rand)

    def update(self, emb, labels, chunk=4096):
        """``G += H^T H``, ``C += H^T Y`` over the clips of ``emb`` [n, dim] / ``labels`` [n] (in chunks)."""
        for start in range(0, len(labels), chunk):
            h = self.features(emb[start:start + chunk])
            self.G += h.t() @ h
            self.C += h.t() @ self.targets(labels[start:start + chunk])

    def solve(self, ridge):
        """``W_out = (G + ridge I)^-1 C`` (``torch.linalg.solve``, float64); returns ``W_out``."""
        self.ridge = float(ridge)
        self.W_out = ridge_solve(self.G, self.C, self.ridge)
        return self.W_out

    def scores(self, emb):
        """[n, n_classes] float32: ``relu(emb @ W_rand) @ W_out``."""
        return (self.features(emb) @ self.W_out).float()


def ridge_solve(gram, targets, ridge):
    """``(gram + ridge I)^-1 targets`` by a linear solve (no explicit inverse)."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge * eye, targets)


def select_ridge(head, emb, labels, seed, grid=RIDGE_GRID):
    """RanPAC's ``optimise_ridge_parameter``: the lambda of ``grid`` whose head, fitted on 80 % of the
    current task's training clips (``emb`` [n, dim], ``labels`` [n]), has the least mean squared error
    on the one-hot targets of the other 20 %.

    The original takes the first 80 % of its shuffled loader's order; here a permutation seeded by
    ``seed``. Ties: the first (smallest) lambda, as ``np.argmin``.

    Returns
    -------
    (lambda, list of the validation losses over ``grid``)
    """
    order = torch.as_tensor(np.random.RandomState(seed).permutation(len(labels)))
    n_fit = int(len(labels) * RIDGE_FIT_FRACTION)
    fit, held = order[:n_fit], order[n_fit:]
    h_fit, h_held = head.features(emb[fit]), head.features(emb[held])
    gram, cross = h_fit.t() @ h_fit, h_fit.t() @ head.targets(labels[fit])
    y_held = head.targets(labels[held])
    losses = [float(F.mse_loss(h_held @ ridge_solve(gram, cross, ridge), y_held)) for ridge in grid]
    return grid[int(np.argmin(losses))], losses
