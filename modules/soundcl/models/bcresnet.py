"""On-device encoders of the replay recipe: BC-ResNet and the small baseline CNN.

Both take log-mel feats [batch, frames, n_mels] and relative lengths [batch]
and return embeddings [batch, emb_dim]; the classifier is a separate module
(:class:`soundcl.models.encoders.Classifier`), so perturbing the classifier's
input needs no model-specific code.

BC-ResNet follows Kim et al., "Broadcasted Residual Learning for Efficient
Keyword Spotting" (Interspeech 2021): frequency-wise depthwise convolutions with
sub-spectral normalisation (2-D path), averaged over frequency into a temporal
depthwise convolution (1-D path) whose output is broadcast back over frequency.
"""
import torch.nn as nn
import torch.nn.functional as F

from soundcl.models.encoders import _time_mask


def masked_time_mean(x, lens):
    """Mean over the valid frames: x [batch, channels, time] -> [batch, channels]."""
    mask = _time_mask(lens, x.shape[-1], x.device).unsqueeze(1).to(x.dtype)
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def set_bn_momentum(module, momentum):
    """Set the momentum of every batch-norm inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


class SubSpectralNorm(nn.Module):
    """Batch-norm with separate statistics for ``n_subbands`` frequency bands.

    x [batch, channels, freq, time] with ``freq`` divisible by ``n_subbands``.
    """

    def __init__(self, channels, n_subbands):
        super().__init__()
        self.n_subbands = n_subbands
        self.norm = nn.BatchNorm2d(channels * n_subbands)

    def forward(self, x):
        b, c, f, t = x.shape
        x = self.norm(x.reshape(b, c * self.n_subbands, f // self.n_subbands, t))
        return x.reshape(b, c, f, t)


class BCBlock(nn.Module):
    """Broadcasted residual block; a transition block changes the channel count.

    x [batch, in_ch, freq, time] -> [batch, out_ch, freq / stride_f, time].
    """

    def __init__(self, in_ch, out_ch, freq_stride=1, dilation=1, n_subbands=4, dropout=0.1):
        super().__init__()
        self.transition = in_ch != out_ch
        if self.transition:
            self.expand = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())
        self.freq_dw = nn.Conv2d(out_ch, out_ch, (3, 1), stride=(freq_stride, 1), padding=(1, 0), groups=out_ch, bias=False)
        self.ssn = SubSpectralNorm(out_ch, n_subbands)
        self.time_dw = nn.Conv1d(out_ch, out_ch, 3, padding=dilation, dilation=dilation, groups=out_ch, bias=False)
        self.time_bn = nn.BatchNorm1d(out_ch)
        self.pointwise = nn.Conv1d(out_ch, out_ch, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        if self.transition:
            x = self.expand(x)
        f2 = self.ssn(self.freq_dw(x))                          # [B, C, F', T]
        f1 = F.silu(self.time_bn(self.time_dw(f2.mean(dim=2))))  # [B, C, T]
        f1 = self.dropout(self.pointwise(f1)).unsqueeze(2)       # broadcast over F'
        out = f2 + f1
        if not self.transition and self.freq_dw.stride[0] == 1:
            out = out + x
        return F.relu(out)


class BCResNet(nn.Module):
    """BC-ResNet-``c`` encoder (c = width factor; BC-ResNet-1 has ~9k parameters).

    Stages (channels, blocks, frequency stride, dilation) follow the paper:
    (8c, 2, 1, 1), (12c, 2, 2, 2), (16c, 4, 2, 4), (20c, 4, 1, 8), after a 5x5
    stem convolution of stride 2 over frequency. ``emb_dim`` defaults to 32c.

    Arguments
    ---------
    n_mels : int
        Mel bins of the input; must be divisible by ``8 * n_subbands`` (the stem
        and two stages halve it and every sub-spectral norm splits it).
    c : float
        Width factor.
    n_subbands : int
        Sub-bands of the sub-spectral normalisation.
    dropout : float
    emb_dim : int, optional
    bn_momentum : float or None
        Momentum of every batch-norm; ``None`` (cumulative average) suits runs of
        only a few dozen steps, where exponential averages are still near their
        initial values when the model is evaluated.
    """

    STAGES = ((8, 2, 1, 1), (12, 2, 2, 2), (16, 4, 2, 4), (20, 4, 1, 8))

    def __init__(self, n_mels=64, c=1, n_subbands=4, dropout=0.1, emb_dim=None, bn_momentum=0.1):
        super().__init__()
        if n_mels % (8 * n_subbands):
            raise ValueError(
                f"BCResNet needs n_mels divisible by 8 * n_subbands = {8 * n_subbands}, got n_mels={n_mels}"
            )
        self.n_mels = n_mels
        width = lambda ch: max(1, int(round(ch * c)))  # noqa: E731
        stem_ch = width(16)
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem_ch, 5, stride=(2, 1), padding=2, bias=False), nn.BatchNorm2d(stem_ch), nn.ReLU()
        )
        blocks, in_ch = [], stem_ch
        for channels, n_blocks, freq_stride, dilation in self.STAGES:
            out_ch = width(channels)
            for i in range(n_blocks):
                blocks.append(BCBlock(in_ch, out_ch, freq_stride if i == 0 else 1, dilation, n_subbands, dropout))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head_dw = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 5, padding=2, groups=in_ch, bias=False), nn.BatchNorm2d(in_ch), nn.ReLU()
        )
        self.emb_dim = int(emb_dim) if emb_dim else width(32)
        self.project = nn.Sequential(nn.Conv2d(in_ch, self.emb_dim, 1, bias=False), nn.BatchNorm2d(self.emb_dim), nn.ReLU())
        set_bn_momentum(self, bn_momentum)

    def feature_map(self, feats, lens=None):
        """feats [batch, frames, n_mels] -> the map before pooling, [batch, emb_dim, F'', frames]."""
        if feats.shape[-1] != self.n_mels:
            raise ValueError(f"BCResNet was built for n_mels={self.n_mels}, got feats with {feats.shape[-1]} mel bins")
        x = feats.transpose(1, 2).unsqueeze(1)   # [B, 1, F, T]
        x = self.blocks(self.stem(x))
        return self.project(self.head_dw(x))     # [B, emb, F'', T]

    def pool(self, fmap, lens=None):
        """Mean over frequency and the valid frames: [batch, emb, F'', T] -> [batch, emb]."""
        return masked_time_mean(fmap.mean(dim=2), lens)

    def forward(self, feats, lens=None):
        """feats [batch, frames, n_mels], lens [batch] -> embeddings [batch, emb_dim]."""
        return self.pool(self.feature_map(feats, lens), lens)


class BaselineCNN(nn.Module):
    """The small baseline CNN: 4 blocks (3x3 conv, BN, ReLU, 2x2 max-pool,
    dropout) of 16-32-64-128 channels, pooled, projected to ``emb_dim`` (32).

    forward: feats [batch, frames, n_mels], lens [batch] -> [batch, emb_dim].
    """

    def __init__(self, channels=(16, 32, 64, 128), emb_dim=32, dropout=0.2, bn_momentum=0.1):
        super().__init__()
        layers, in_ch = [], 1
        for out_ch in channels:
            layers.append(nn.ModuleDict({
                "conv": nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                "bn": nn.BatchNorm2d(out_ch),
            }))
            in_ch = out_ch
        self.blocks = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, emb_dim)
        self.emb_dim = emb_dim
        set_bn_momentum(self, bn_momentum)

    def forward(self, feats, lens=None):
        """feats [batch, frames, n_mels], lens [batch] -> embeddings [batch, emb_dim]."""
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        for block in self.blocks:
            x = F.relu(block["bn"](block["conv"](x)))
            if x.shape[-2] >= 2 and x.shape[-1] >= 2:
                x = F.max_pool2d(x, 2)
            x = self.dropout(x)
        x = masked_time_mean(x.mean(dim=3), lens)  # [B, C]
        return F.relu(self.fc(x))
