"""DSMN: a ~45 k-parameter acoustic-scene encoder for edge devices.

"Deep space separable distillation" blocks (DCASE 2023 task 1 low-complexity
system): each block splits the feature map along frequency into a high and a
low half; the high half goes through a chain of three depthwise-separable
convolutions (grouped 1x1 channel conv, then parallel dilated 3x1 and 1x3
depthwise convs summed, batch norm, ReLU), the low half through a grouped 1x1
conv. The two halves are summed (which halves the frequency axis), re-weighted
by efficient channel attention (ECA), projected by a 1x1 conv, normalised and
pooled over time. The globally pooled outputs of the last ``n_pooled`` blocks
are concatenated (multi-scale embedding) and go through a ``emb_dim``-unit
layer.

The model is written for eager-mode int8 quantization
(:mod:`soundcl.ondevice.quantize`): tensor additions and products go through
``FloatFunctional``, a ``QuantStub`` quantizes the input, the time pooling is
done in float (so padding frames can be masked) and the embedding layer is
quantized again. :meth:`DSMN.fuse_model` names the conv-bn(-relu) groups.

Interface as the other encoders: ``DSMN(feats [batch, time, n_mels], lens
[batch]) -> [batch, emb_dim]``; heads are :class:`soundcl.models.encoders.Classifier`
(scenes) and another one for the scene groups (:class:`DSMNBrain` in
:mod:`soundcl.dsmn_brain`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub

from soundcl.models.encoders import masked_mean_max_pool

#: The three scene groups of TAU Urban Acoustic Scenes 2022 Mobile, by scene label.
TAU22_SCENE_GROUPS = {
    "airport": "indoor", "shopping_mall": "indoor", "metro_station": "indoor",
    "street_pedestrian": "outdoor", "public_square": "outdoor", "street_traffic": "outdoor", "park": "outdoor",
    "tram": "transportation", "bus": "transportation", "metro": "transportation",
}
GROUP_NAMES = ("indoor", "outdoor", "transportation")


def channel_shuffle(x, groups):
    """Interleave the channels of ``groups`` groups, so the next grouped conv mixes them.

    x [batch, channels, time, freq] -> same shape.
    """
    if groups == 1:
        return x
    # One channel gather with a fixed permutation (channels are static): the same values as the
    # reshape-transpose-reshape, and one op instead of a dozen shape ops in an exported graph.
    c = int(x.shape[1])
    perm = torch.arange(c, device=x.device).reshape(groups, c // groups).t().reshape(-1)
    return x.index_select(1, perm)


def _groups_for(channels, groups):
    """Largest divisor of ``channels`` not above ``groups``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class SeparableUnit(nn.Module):
    """Grouped 1x1 conv -> (dilated 3x1 depthwise + dilated 1x3 depthwise) -> BN -> ReLU.

    x [batch, C, time, freq] -> [batch, C, time, freq].
    """

    def __init__(self, channels, groups, dilation):
        super().__init__()
        self.groups = _groups_for(channels, groups)
        self.pointwise = nn.Conv2d(channels, channels, 1, groups=self.groups, bias=False)
        self.depthwise_time = nn.Conv2d(
            channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1), groups=channels, bias=False
        )
        self.depthwise_freq = nn.Conv2d(
            channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation), groups=channels, bias=False
        )
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.add = FloatFunctional()

    def forward(self, x):
        x = channel_shuffle(self.pointwise(x), self.groups)
        x = self.add.add(self.depthwise_time(x), self.depthwise_freq(x))
        return self.relu(self.bn(x))


class ECA(nn.Module):
    """Efficient channel attention: global pool, 1-D conv over channels, sigmoid, scale.

    x [batch, C, time, freq] -> same shape.
    """

    def __init__(self, kernel_size=3):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()
        self.mul = FloatFunctional()

    def forward(self, x):
        c = int(x.shape[1])  # static; -1 keeps the batch axis dynamic in an exported graph
        weights = self.sigmoid(self.conv(self.pool(x).reshape(-1, 1, c))).reshape(-1, c, 1, 1)
        return self.mul.mul(x, weights)


class DSDBlock(nn.Module):
    """Deep space separable distillation block.

    x [batch, in_ch, time, freq] -> [batch, out_ch, time', ceil(freq / 2)]
    (time' = time // 2 when ``pool_time`` and time >= 2).
    """

    def __init__(self, in_ch, out_ch, groups=4, dilations=(1, 2, 3), eca_kernel=3, pool_time=True):
        super().__init__()
        self.high = nn.Sequential(*[SeparableUnit(in_ch, groups, d) for d in dilations])
        low_groups = _groups_for(in_ch, groups)
        self.low = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 1, groups=low_groups, bias=False), nn.BatchNorm2d(in_ch), nn.ReLU()
        )
        self.eca = ECA(eca_kernel)
        self.project = nn.Conv2d(in_ch, out_ch, 1, groups=_groups_for(in_ch, max(1, groups // 2)), bias=False)
        self.project_groups = self.project.groups
        self.bn = nn.BatchNorm2d(out_ch)
        self.merge = FloatFunctional()
        self.pool_time = pool_time

    def forward(self, x):
        n_freq = int(x.shape[-1])  # static (n_mels): constant slices in an exported graph
        half = (n_freq + 1) // 2
        # Odd frequency counts: the two halves overlap by one bin (no padding,
        # which keeps the block quantizable).
        high = x[..., n_freq - half:] if n_freq > 1 else x
        low = x[..., :half]
        x = self.merge.add(self.high(high), self.low(low))
        x = self.eca(x)
        x = self.bn(self.project(channel_shuffle(x, self.project_groups)))
        if self.pool_time and x.shape[2] >= 2:
            x = F.avg_pool2d(x, (2, 1))
        return x


class DSMN(nn.Module):
    """DSMN encoder: filterbanks [batch, time, n_mels] -> embedding [batch, emb_dim].

    Arguments
    ---------
    n_mels : int
        Number of filterbank channels of the input.
    channels : sequence of int
        Stem channels, then the output channels of each block (24-32-64-64-64).
    emb_dim : int
        Size of the embedding layer (100 in the published system).
    n_pooled : int
        Number of last blocks whose pooled outputs form the multi-scale embedding.
    groups : int
        Groups of the 1x1 channel convs (the projection uses half as many).
    dilations : sequence of int
        Dilations of the three separable units of a block.
    dropout : float
        Dropout on the embedding.
    """

    def __init__(self, n_mels=128, channels=(24, 32, 64, 64, 64), emb_dim=100, n_pooled=4, groups=4,
                 dilations=(1, 2, 3), eca_kernel=3, dropout=0.2):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"DSMN needs a stem and at least one block: channels={list(channels)}")
        if not 1 <= n_pooled <= len(channels) - 1:
            raise ValueError(f"n_pooled={n_pooled} must be in 1..{len(channels) - 1} (the number of blocks)")
        self.quant = QuantStub()
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, stride=(1, 2), padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        self.blocks = nn.ModuleList(
            DSDBlock(c_in, c_out, groups, dilations, eca_kernel, pool_time=i < len(channels) - 2)
            for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:]))
        )
        self.n_pooled = n_pooled
        self.dequant_pool = DeQuantStub()
        self.quant_emb = QuantStub()
        pooled_dim = sum(channels[-n_pooled:])
        self.embedding = nn.Sequential(nn.Linear(pooled_dim, emb_dim), nn.ReLU())
        self.dequant_emb = DeQuantStub()
        self.dropout = nn.Dropout(dropout)
        self.n_mels = n_mels
        self.emb_dim = emb_dim

    def forward(self, feats, lens=None):
        """feats [batch, time, n_mels], lens [batch] (relative) -> [batch, emb_dim]."""
        x = self.quant(feats.unsqueeze(1))  # [B, 1, T, F]
        x = self.stem(x)
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - self.n_pooled:
                # Pooled in float: padding frames are masked out of the mean/max.
                pooled.append(masked_mean_max_pool(self.dequant_pool(x).mean(dim=3), lens))
        emb = self.embedding(self.quant_emb(torch.cat(pooled, dim=1)))
        return self.dropout(self.dequant_emb(emb))

    def fuse_model(self, qat=False):
        """Fuse conv-bn(-relu) groups in place (eager-mode quantization)."""
        from torch.ao.quantization import fuse_modules, fuse_modules_qat

        fuse = fuse_modules_qat if qat else fuse_modules
        fuse(self.stem, [["0", "1", "2"]], inplace=True)
        fuse(self.embedding, [["0", "1"]], inplace=True)
        for block in self.blocks:
            fuse(block.low, [["0", "1", "2"]], inplace=True)
            fuse(block, [["project", "bn"]], inplace=True)
        return self


def group_targets(scene_targets, class_to_group):
    """Map scene indices [batch] to group indices [batch] with a lookup tensor [n_classes]."""
    return class_to_group.to(scene_targets.device)[scene_targets]
