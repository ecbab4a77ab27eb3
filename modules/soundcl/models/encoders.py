"""Audio encoders: filterbank features in, one embedding per clip out.

Every encoder takes ``feats`` of shape [batch, time, n_mels] and SpeechBrain
relative lengths ``lens`` of shape [batch] and returns embeddings of shape
[batch, emb_dim]. Padding frames are excluded from the temporal pooling, so a
clip's embedding does not depend on what it was batched with.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _time_mask(lens, n_frames, device):
    """Boolean mask [batch, n_frames] of the valid (non-padding) frames."""
    if lens is None:
        return torch.ones(1, n_frames, dtype=torch.bool, device=device)
    valid = torch.clamp(torch.round(lens * n_frames), min=1)
    return torch.arange(n_frames, device=device)[None, :] < valid[:, None]


def masked_mean_max_pool(x, lens):
    """Mean + max over time of the valid frames.

    Arguments
    ---------
    x : torch.Tensor, shape [batch, channels, time]
    lens : torch.Tensor, shape [batch], relative lengths (or None)

    Returns
    -------
    torch.Tensor, shape [batch, channels]
    """
    mask = _time_mask(lens, x.shape[-1], x.device).unsqueeze(1)  # [B, 1, T]
    mean = (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    maximum = x.masked_fill(~mask, torch.finfo(x.dtype).min).amax(-1)
    return mean + maximum


def make_norm(norm_type, dim):
    """Normalisation of an embedding: ``bn``, ``in``, ``ln`` or ``none``."""
    if norm_type == "bn":
        return nn.BatchNorm1d(dim)
    if norm_type == "ln":
        return nn.LayerNorm(dim)
    if norm_type == "in":
        # Instance norm over a single vector: normalise each embedding itself.
        return _VectorInstanceNorm()
    if norm_type in (None, "none"):
        return nn.Identity()
    raise ValueError(f"unknown emb_norm_type {norm_type!r}: expected bn, in, ln or none")


class _VectorInstanceNorm(nn.Module):
    def forward(self, x):
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)


def make_norm2d(norm_type, channels):
    """Normalisation of a [batch, channels, H, W] map, as the original CNN14 (cssl_sound ``models/pann.py``).

    ``bn``: BatchNorm2d; ``in``: InstanceNorm2d (affine, running statistics);
    ``ln``: GroupNorm with one group (layer norm over channels x H x W).
    """
    if norm_type == "bn":
        return nn.BatchNorm2d(channels)
    if norm_type == "in":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)
    if norm_type == "ln":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"unknown emb_norm_type {norm_type!r} for the CNN blocks: expected bn, in or ln")


class ConvBlock(nn.Module):
    """Two 3x3 conv + norm + ReLU layers, then 2x2 average pooling.

    Input and output: [batch, channels, time, freq].
    """

    def __init__(self, in_channels, out_channels, pool=(2, 2), norm_type="bn"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = make_norm2d(norm_type, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = make_norm2d(norm_type, out_channels)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.pool is not None and x.shape[-2] >= self.pool[0] and x.shape[-1] >= self.pool[1]:
            x = F.avg_pool2d(x, self.pool)
        return x


#: What the CNN puts on its pooled conv output (``embedding_head``).
EMBEDDING_HEADS = ("pool", "fc")


class CNNEncoder(nn.Module):
    """A stack of :class:`ConvBlock` s, frequency averaged, time pooled (mean + max).

    Two embeddings (``embedding_head``):

    * ``pool`` - PANN CNN14 as the continual-SSL research code has it
      (zhepeiw/cssl_sound ``models/pann.py``): the blocks ``channels`` then
      one embedding block of ``emb_dim`` channels (no pooling), dropout after
      every block, and the embedding is the raw mean + max pool of that last
      block: no linear layer. ``block_norm_type`` is the normalisation of the
      input (per mel bin) and of every conv block; conv weights are Xavier
      initialised. With ``channels=(64, 128, 256, 512, 1024)`` and
      ``emb_dim=2048`` this is the original's CNN14.
    * ``fc`` - soundcl's earlier encoder: the blocks ``channels`` (no pooling
      after the sixth), then dropout, ``Linear(channels[-1], emb_dim)``, ReLU
      and ``emb_norm_type`` on the embedding.

    Padding frames (SpeechBrain relative ``lens``) are left out of the time
    pooling in both, so an embedding does not depend on its batch-mates.

    Arguments
    ---------
    n_mels : int
        Number of filterbank channels of the input.
    channels : sequence of int
        Output channels of each conv block (``pool``: before the embedding block).
    emb_dim : int
        Embedding size.
    emb_norm_type : str
        ``fc`` only: ``bn``, ``in``, ``ln`` or ``none`` on the embedding.
    dropout : float
    embedding_head : str
        ``pool`` or ``fc`` (see above).
    block_norm_type : str
        ``bn``, ``in`` or ``ln`` in the input normalisation and the conv blocks.
    """

    def __init__(self, n_mels=64, channels=(16, 32, 64), emb_dim=128, emb_norm_type="bn", dropout=0.2,
                 embedding_head="fc", block_norm_type="bn"):
        super().__init__()
        if embedding_head not in EMBEDDING_HEADS:
            raise ValueError(f"unknown embedding_head {embedding_head!r}: expected one of {', '.join(EMBEDDING_HEADS)}")
        self.embedding_head = embedding_head
        self.input_bn = make_norm2d(block_norm_type, n_mels)
        blocks, in_ch = [], 1
        if embedding_head == "pool":
            widths = list(channels) + [emb_dim]
            pools = [(2, 2)] * len(channels) + [(1, 1)]
        else:
            widths = list(channels)
            pools = [(1, 1) if i == len(widths) - 1 and len(widths) > 5 else (2, 2) for i in range(len(widths))]
        for out_ch, pool in zip(widths, pools):
            blocks.append(ConvBlock(in_ch, out_ch, pool=pool, norm_type=block_norm_type))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        if embedding_head == "fc":
            self.fc = nn.Linear(in_ch, emb_dim)
            self.norm = make_norm(emb_norm_type, emb_dim)
        else:
            self._init_like_pann()
        self.emb_dim = emb_dim

    def _init_like_pann(self):
        """Xavier-uniform conv weights, unit-scale / zero-shift norms (the original's init_layer / init_bn)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, feats, lens=None):
        """feats [batch, time, n_mels], lens [batch] -> embeddings [batch, emb_dim]."""
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        x = self.input_bn(x.transpose(1, 3)).transpose(1, 3)  # per-mel normalisation
        for block in self.blocks:
            x = block(x)
            if self.embedding_head == "pool" or block is not self.blocks[-1]:
                x = self.dropout(x)
        x = x.mean(dim=3)  # [B, C, T']
        x = masked_mean_max_pool(x, lens)
        if self.embedding_head == "pool":
            return x
        x = F.relu(self.fc(self.dropout(x)))
        return self.norm(x)


def Cnn14(n_mels=64, emb_dim=2048, emb_norm_type="bn", dropout=0.2, embedding_head="fc", block_norm_type="bn"):
    """PANN CNN14 encoder: six double-conv blocks, 64 ... 1024 then ``emb_dim`` (``pool``) or 2048 + FC (``fc``)."""
    if embedding_head == "pool":
        return CNNEncoder(n_mels, (64, 128, 256, 512, 1024), emb_dim, dropout=dropout,
                          embedding_head="pool", block_norm_type=block_norm_type)
    return CNNEncoder(n_mels, (64, 128, 256, 512, 1024, 2048), emb_dim, emb_norm_type, dropout,
                      embedding_head="fc", block_norm_type=block_norm_type)


class EcapaEncoder(nn.Module):
    """SpeechBrain's ECAPA-TDNN with the [batch, emb_dim] interface of soundcl.

    Arguments
    ---------
    n_mels : int
        Input feature size.
    emb_dim : int
        Embedding size (ECAPA's ``lin_neurons``).
    emb_norm_type : str
        Extra normalisation of the embedding (``none`` by default).
    **ecapa_kwargs
        Passed to ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``.
    """

    def __init__(self, n_mels=80, emb_dim=192, emb_norm_type="none", **ecapa_kwargs):
        super().__init__()
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.ecapa = ECAPA_TDNN(input_size=n_mels, lin_neurons=emb_dim, **ecapa_kwargs)
        self.norm = make_norm(emb_norm_type, emb_dim)
        self.emb_dim = emb_dim

    def forward(self, feats, lens=None):
        """feats [batch, time, n_mels], lens [batch] -> embeddings [batch, emb_dim]."""
        return self.norm(self.ecapa(feats, lens).squeeze(1))


#: Encoders :func:`build_encoder` makes (YAML key ``encoder``).
ENCODER_KINDS = ("cnn14", "ecapa")


def build_encoder(kind, n_mels, emb_dim, cnn_channels=(64, 128, 256, 512, 1024), emb_norm_type="bn",
                  embedding_head="pool", dropout=0.2, ecapa_channels=(1024, 1024, 1024, 1024, 3072),
                  ecapa_kernel_sizes=(5, 3, 3, 3, 1), ecapa_dilations=(1, 2, 3, 4, 1), ecapa_attention_channels=128):
    """The encoder named by ``kind``: [batch, time, n_mels] -> [batch, emb_dim].

    ``cnn14``: :class:`CNNEncoder` (``cnn_channels``, ``embedding_head``,
    ``emb_norm_type`` inside the blocks); ``ecapa``: :class:`EcapaEncoder` with
    the configuration of cssl_sound's simclr / simsiam YAMLs (channels
    1024 x 4 + 3072, kernels 5,3,3,3,1, dilations 1,2,3,4,1, attention 128).
    """
    if kind == "cnn14":
        return CNNEncoder(n_mels, tuple(cnn_channels), emb_dim, emb_norm_type, dropout,
                          embedding_head=embedding_head, block_norm_type=emb_norm_type)
    if kind == "ecapa":
        return EcapaEncoder(n_mels, emb_dim, channels=list(ecapa_channels), kernel_sizes=list(ecapa_kernel_sizes),
                            dilations=list(ecapa_dilations), attention_channels=ecapa_attention_channels)
    raise ValueError(f"unknown encoder {kind!r}: expected one of {', '.join(ENCODER_KINDS)}")


class Classifier(nn.Module):
    """Linear head over all ``n_classes`` of the data set.

    forward: embeddings [batch, emb_dim] -> logits [batch, n_classes].
    """

    def __init__(self, emb_dim, n_classes):
        super().__init__()
        self.linear = nn.Linear(emb_dim, n_classes)

    def forward(self, emb):
        return self.linear(emb)
