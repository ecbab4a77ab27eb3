"""ASC-CL's BC-ResNet (``BCResNet_Mod`` of Xiao et al., "Continual Learning For
On-Device Environmental Sound Classification", 2022, github.com/swagshaw/ASC-CL).

The default encoder of the replay recipes. It differs from Kim et al.'s BC-ResNet
(:class:`soundcl.models.bcresnet.BCResNet`) in its layout and width: a 5x5 stem of
stride 2 on both axes with ``2c`` channels, then transition / broadcasted blocks
of ``c``, ``1.5c``, ``2c`` and ``2.5c`` channels with two 2x2 max-pools, no dilation,
no depthwise head, and a 1x1-convolution classifier followed by global average
pooling. ASC-CL uses ``c = 40`` (its ``c=4`` times 10): 85,810 parameters in the
encoder and the 10-class classifier (ASC-CL's module counts 85,830 with an unused
20-parameter linear layer), 85,938 with the mel batch-norm of the front end. With
the same weights, encoder + classifier give ASC-CL's outputs to float precision.

As in ASC-CL, the input map is ``[batch, 1, time, mel]``: the block's "frequency"
depthwise convolution (kernel 3x1) and its average pooling act on the *time* axis
and the "temporal" convolution (1x3) on the mel axis, while the sub-spectral norm
splits the mel axis into 4 sub-bands. Kept as published, since it is what the
published numbers were obtained with.

The 1x1-conv classifier followed by average pooling is linear, so it equals
average pooling followed by a linear layer with the same weights: the encoder
returns the pooled map ``[batch, 2.5c]`` and the recipe's ordinary
:class:`soundcl.models.encoders.Classifier` plays the 1x1 convolution. Methods
that act on the map itself (noisytune, :class:`soundcl.memory.perturbations.FeatureMapNoise`)
use :meth:`ASCCLBCResNet.feature_map` and :meth:`ASCCLBCResNet.pool`.
"""
import torch.nn as nn
import torch.nn.functional as F

from soundcl.models.encoders import _time_mask


class SubSpectralNorm(nn.Module):
    """Batch-norm with separate statistics for ``n_subbands`` bands of the last (mel) axis.

    x [batch, channels, time, mel] with ``mel`` divisible by ``n_subbands``.
    """

    def __init__(self, channels, n_subbands=4):
        super().__init__()
        self.n_subbands = n_subbands
        self.norm = nn.BatchNorm2d(channels * n_subbands)

    def forward(self, x):
        b, c, t, f = x.shape
        return self.norm(x.reshape(b, c * self.n_subbands, t, f // self.n_subbands)).reshape(b, c, t, f)


class _BroadcastPath(nn.Module):
    """The shared part of both blocks: depthwise (3x1) conv + sub-spectral norm (2-D
    path), its mean over axis 2 through a depthwise (1x3) conv, BN, SiLU, 1x1 conv and
    channel dropout (1-D path), broadcast back and added to the 2-D path."""

    def __init__(self, planes, dropout=0.1):
        super().__init__()
        self.dw_axis2 = nn.Conv2d(planes, planes, (3, 1), padding=(1, 0), groups=planes, bias=False)
        self.ssn = SubSpectralNorm(planes, 4)
        self.dw_axis3 = nn.Conv2d(planes, planes, (1, 3), padding=(0, 1), groups=planes, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.pointwise = nn.Conv2d(planes, planes, 1, bias=False)
        self.channel_drop = nn.Dropout2d(dropout)

    def forward(self, x):
        two_d = self.ssn(self.dw_axis2(x))
        one_d = self.dw_axis3(two_d.mean(2, keepdim=True))
        one_d = self.channel_drop(self.pointwise(F.silu(self.bn(one_d))))
        return two_d, one_d


class TransitionBlock(nn.Module):
    """1x1 conv + BN + ReLU to ``planes`` channels, then the broadcast path; no residual."""

    def __init__(self, inplanes, planes, dropout=0.1):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU())
        self.path = _BroadcastPath(planes, dropout)

    def forward(self, x):
        two_d, one_d = self.path(self.expand(x))
        return F.relu(two_d + one_d)


class BroadcastedBlock(nn.Module):
    """The broadcast path plus the identity."""

    def __init__(self, planes, dropout=0.1):
        super().__init__()
        self.path = _BroadcastPath(planes, dropout)

    def forward(self, x):
        two_d, one_d = self.path(x)
        return F.relu(two_d + one_d + x)


class ASCCLBCResNet(nn.Module):
    """ASC-CL's ``BCResNet_Mod`` encoder (without its 1x1-conv classifier).

    Arguments
    ---------
    n_mels : int
        Mel bins of the input; must be divisible by 16 (stem stride 2, two max-pools,
        sub-spectral norm over 4 bands).
    channels : int
        ``c`` of the blocks (ASC-CL: 40); the stem has ``2c``, the last stage ``2.5c``
        (= ``emb_dim``).
    dropout : float
        Channel dropout of the blocks (ASC-CL: 0.1).
    bn_momentum : float
        Momentum of every batch-norm (ASC-CL: PyTorch's default 0.1).

    forward: feats [batch, frames, n_mels], lens [batch] -> embeddings [batch, emb_dim].
    """

    def __init__(self, n_mels=64, channels=40, dropout=0.1, bn_momentum=0.1):
        super().__init__()
        if n_mels % 16:
            raise ValueError(f"ASCCLBCResNet needs n_mels divisible by 16, got n_mels={n_mels}")
        c = int(channels)
        if c < 2 or c % 2:
            raise ValueError(f"ASCCLBCResNet needs an even channels >= 2 (1.5c and 2.5c must be integers), got {channels}")
        self.n_mels = n_mels
        widths = (c, int(1.5 * c), 2 * c, int(2.5 * c))
        self.stem = nn.Conv2d(1, 2 * c, 5, stride=(2, 2), padding=(2, 2))  # with bias, as ASC-CL
        self.stage1 = nn.Sequential(TransitionBlock(2 * c, widths[0], dropout), BroadcastedBlock(widths[0], dropout))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), TransitionBlock(widths[0], widths[1], dropout),
                                    BroadcastedBlock(widths[1], dropout))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), TransitionBlock(widths[1], widths[2], dropout),
                                    BroadcastedBlock(widths[2], dropout))
        self.stage4 = nn.Sequential(TransitionBlock(widths[2], widths[3], dropout),
                                    BroadcastedBlock(widths[3], dropout), BroadcastedBlock(widths[3], dropout))
        self.emb_dim = widths[3]
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = bn_momentum

    def feature_map(self, feats, lens=None):
        """feats [batch, frames, n_mels] -> the map the classifier sees, [batch, emb_dim, frames/8, n_mels/8]."""
        if feats.shape[-1] != self.n_mels:
            raise ValueError(f"ASCCLBCResNet was built for n_mels={self.n_mels}, got feats with {feats.shape[-1]} mel bins")
        x = self.stem(feats.unsqueeze(1))  # [B, 1, T, F] as in ASC-CL
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))

    def pool(self, fmap, lens=None):
        """Global average of the map over the valid frames: [batch, C, T', F'] -> [batch, C]."""
        x = fmap.mean(dim=3)  # [B, C, T']
        mask = _time_mask(lens, x.shape[-1], x.device).unsqueeze(1).to(x.dtype)
        return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    def forward(self, feats, lens=None):
        return self.pool(self.feature_map(feats, lens), lens)


#: ``replay_encoder`` values: ASC-CL's model (the replay recipes' default) and Kim et al.'s.
REPLAY_ENCODERS = ("ascl_bcresnet", "bcresnet")


def replay_encoder(name, n_mels=64, ascl_channels=40, bcresnet_c=3, bcresnet_emb_dim=None, dropout=0.1,
                   bn_momentum=0.1):
    """The encoder named by the replay recipes' ``replay_encoder`` key.

    ``ascl_bcresnet``: :class:`ASCCLBCResNet` with ``ascl_channels`` (ASC-CL: 40);
    ``bcresnet``: Kim et al.'s :class:`soundcl.models.bcresnet.BCResNet` of width
    ``bcresnet_c`` (soundcl's earlier default: 3, 52 k parameters). Its ``emb_dim``
    attribute sizes the classifier.
    """
    if name == "ascl_bcresnet":
        return ASCCLBCResNet(n_mels=n_mels, channels=ascl_channels, dropout=dropout, bn_momentum=bn_momentum)
    if name == "bcresnet":
        from soundcl.models.bcresnet import BCResNet

        return BCResNet(n_mels=n_mels, c=bcresnet_c, emb_dim=bcresnet_emb_dim, dropout=dropout, bn_momentum=bn_momentum)
    raise ValueError(f"replay_encoder={name!r} is not valid: expected one of {', '.join(REPLAY_ENCODERS)}")
