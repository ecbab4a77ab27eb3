"""Heads put on an encoder for self-supervised training.

* :class:`Projector` - the MLP that maps embeddings to the space where the
  SSL loss is computed (SimCLR, SimSiam, SupCLR);
* :class:`Predictor` - SimSiam's bottleneck MLP.

Both take and return [batch, dim] tensors. The continual-SSL research code
(zhepeiw/cssl_sound, ``models/modules.py``) puts the same pair on top of the
encoder in SimCLR, SimSiam and SupCLR alike: its ``SimSiamProjector`` is
``Linear -> norm -> ReLU -> Linear -> norm`` (:func:`cssl_projector`) and its
``SimSiamPredictor`` is ``Linear(no bias) -> norm -> ReLU -> Linear`` with a
``dim // 4`` bottleneck (:func:`cssl_predictor`); the SimCLR / SupCLR loss is
computed on ``predictor(projector(h))``.
"""
import torch.nn as nn

from soundcl.models.encoders import make_norm


class Projector(nn.Module):
    """MLP ``Linear -> norm -> ReLU`` x (n_layers - 1), then ``Linear`` (``-> norm`` with ``output_norm``).

    Hidden linear layers keep their bias, as in the original's projector.

    Arguments
    ---------
    in_dim : int
        Embedding size of the encoder.
    hidden_dim : int
    out_dim : int
    n_layers : int
        Number of linear layers (>= 1).
    norm_type : str
        ``bn``, ``ln`` or ``none`` after each hidden layer (``proj_norm_type``).
    output_norm : bool
        Normalise the output too (the original's projector ends with a batch norm).
    """

    def __init__(self, in_dim, hidden_dim, out_dim, n_layers=2, norm_type="bn", output_norm=False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"Projector needs at least one layer, got n_layers={n_layers}")
        if norm_type not in ("bn", "ln", "none", None):
            raise ValueError(f"unknown proj_norm_type {norm_type!r}: expected bn, ln or none")
        layers, dim = [], in_dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), make_norm(norm_type, hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        if output_norm:
            layers.append(make_norm(norm_type, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, emb):
        """emb [batch, in_dim] -> projections [batch, out_dim]."""
        return self.net(emb)


class Predictor(nn.Module):
    """SimSiam's predictor: ``Linear(dim, bottleneck) -> norm -> ReLU -> Linear(bottleneck, dim)``.

    Arguments
    ---------
    dim : int
        Projection size (input and output).
    bottleneck_dim : int
        Hidden size; SimSiam uses ``dim // 4``.
    norm_type : str
        ``bn``, ``ln`` or ``none``.
    """

    def __init__(self, dim, bottleneck_dim, norm_type="bn"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, bottleneck_dim, bias=norm_type in ("none", None)),
            make_norm(norm_type, bottleneck_dim),
            nn.ReLU(inplace=True),
            nn.Linear(bottleneck_dim, dim),
        )

    def forward(self, z):
        """z [batch, dim] -> predictions [batch, dim]."""
        return self.net(z)


def cssl_projector(in_dim, hidden_dim, out_dim, norm_type="bn"):
    """The original's projector (``SimSiamProjector``): ``Linear -> norm -> ReLU -> Linear -> norm``.

    [batch, in_dim] -> [batch, out_dim]; the output norm is what the SSL loss (or the predictor) sees.
    """
    return Projector(in_dim, hidden_dim, out_dim, n_layers=2, norm_type=norm_type, output_norm=True)


def cssl_predictor(dim, norm_type="bn"):
    """The original's predictor (``SimSiamPredictor``): bottleneck ``dim // 4``, [batch, dim] -> [batch, dim]."""
    return Predictor(dim, max(1, dim // 4), norm_type=norm_type)
