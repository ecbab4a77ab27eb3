"""PaSST (Patchout faSt Spectrogram Transformer) through the ``hear21passt`` package.

    pip install -e ".[passt]"      # hear21passt + timm + the torchvision matching torch

Three modules for a recipe YAML:

- :class:`PaSSTFrontEnd` (``compute_features``): waveform at 32 kHz -> the
  log-mel spectrogram PaSST was trained on (128 mels, 1024-point FFT, 800-sample
  Hann window = 25 ms, hop 320 = 10 ms, pre-emphasis, ``(log mel + 4.5) / 5``),
  as hear21passt's ``AugmentMelSTFT``; [batch, samples] -> [batch, frames, 128].
  Its normalisation is fixed, so the Brain's ``mean_var_norm`` is
  :class:`FixedNormalization` (identity).
- :class:`PaSST` (``embedding_model``): the transformer; [batch, frames, 128] ->
  [batch, embed_dim], the layer-normalised mean of the class and distillation
  tokens (the input of PaSST's linear head). Structured patchout
  (``s_patchout_t`` / ``s_patchout_f``: patch columns / rows dropped in
  training) and unstructured patchout (``u_patchout``) are hear21passt's.
  ``depth`` / ``embed_dim`` / ``num_heads`` build a smaller transformer of the
  same design (the tiny test configuration); left null, ``arch`` gives the
  published one (``passt_s_swa_p16_128_ap476``: 12 layers, width 768, 85.4 M
  parameters with no head).
- :class:`PaSSTClassifier` (``classifier``): PaSST's linear head.

``pretrained_path`` loads a LOCAL checkpoint (the AudioSet weights of the
hear21passt releases, or any state dict of the same architecture); weights are
never downloaded at run time. The encoder takes every backbone weight; the
classifier takes the checkpoint's head (``head.1``) only when its class count
is the classifier's, else keeps its own initialisation (logged).

hear21passt is imported only when a :class:`PaSST` is built.
"""
import contextlib
import io
import logging
import os
import warnings

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

#: Where the AudioSet checkpoints of the published architectures are released.
RELEASE_URLS = {
    "passt_s_swa_p16_128_ap476":
        "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
    "passt_s_kd_p16_128_ap486":
        "https://github.com/kkoutini/PaSST/releases/download/v.0.0.9/passt-s-kd-ap.486.pt",
    "passt_l_kd_p16_128_ap47":
        "https://github.com/kkoutini/PaSST/releases/download/v.0.0.10/passt-l-kd-ap.47.pt",
}
RELEASES_PAGE = "https://github.com/kkoutini/PaSST/releases"

#: Patch size of every PaSST architecture (16 x 16 mel bins x frames).
PATCH_SIZE = 16


def import_hear21passt():
    """The ``hear21passt.models.passt`` module, or one clear error naming the extra to install."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from hear21passt.models import passt as hp
    except ImportError as error:
        raise ImportError(
            f"PaSST needs the 'passt' extra: pip install -e \".[passt]\" (hear21passt, timm and the "
            f"torchvision release matching torch) [{error}]"
        ) from error
    hp.first_RUN = False  # hear21passt prints every tensor shape on its first forward otherwise
    return hp


def release_url(arch):
    return RELEASE_URLS.get(arch, RELEASES_PAGE)


def read_checkpoint(path, arch):
    """State dict of a local PaSST checkpoint (plain, or wrapped as ``model`` / ``state_dict``;
    ``module.`` / ``net.`` prefixes removed). A missing file is one clear error."""
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(
            f"PaSST pretrained_path {str(path)!r} not found: weights are never downloaded at run time; "
            f"download {release_url(arch)} (the hear21passt release for arch {arch}) and give its local path"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    for prefix in ("module.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_final_head(key):
    # head.0 is the LayerNorm of the embedding (kept in the encoder); head.1 / head_dist the class layers.
    return key.startswith("head.1.") or key.startswith("head_dist.")


class PaSSTFrontEnd(nn.Module):
    """PaSST's log-mel front end: wavs [batch, samples] at ``sample_rate`` -> [batch, frames, n_mels].

    Defaults are hear21passt's (``AugmentMelSTFT``): 32 kHz, 128 mels, 25 ms
    window, 10 ms hop. In training the mel filterbank's edges are jittered by up
    to ``fmin_aug_range`` / ``fmax_aug_range`` Hz, as in PaSST's training (1: off).
    """

    def __init__(self, sample_rate=32000, n_mels=128, n_fft=1024, win_length=800, hop_length=320,
                 fmin=0.0, fmax=None, fmin_aug_range=1, fmax_aug_range=1000):
        super().__init__()
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ValueError("fmin_aug_range and fmax_aug_range must be >= 1 (1: no augmentation)")
        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.win_length, self.hop_length = win_length, hop_length
        self.fmin = fmin
        self.fmax = sample_rate // 2 - fmax_aug_range // 2 if fmax is None else fmax
        self.fmin_aug_range, self.fmax_aug_range = fmin_aug_range, fmax_aug_range
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)

    def mel_banks(self, fmin, fmax, device):
        import torchaudio.compliance.kaldi as kaldi

        banks, _ = kaldi.get_mel_banks(self.n_mels, self.n_fft, float(self.sample_rate), fmin, fmax,
                                       vtln_low=100.0, vtln_high=-500.0, vtln_warp_factor=1.0)
        return nn.functional.pad(banks, (0, 1)).to(device)  # [n_mels, n_fft // 2 + 1]

    def forward(self, wavs):
        x = nn.functional.conv1d(wavs.float().unsqueeze(1), self.preemphasis).squeeze(1)
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length, center=True,
                          normalized=False, window=self.window, return_complex=True).abs().pow(2)
        fmin, fmax = self.fmin, self.fmax
        if self.training:
            fmin = fmin + int(torch.randint(self.fmin_aug_range, (1,)))
            fmax = fmax + self.fmax_aug_range // 2 - int(torch.randint(self.fmax_aug_range, (1,)))
        mel = torch.matmul(self.mel_banks(fmin, fmax, spec.device), spec)  # [batch, n_mels, frames]
        mel = (mel + 1e-5).log()
        return ((mel + 4.5) / 5.0).transpose(1, 2)

    def extra_repr(self):
        return f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, win={self.win_length}, hop={self.hop_length}"


class FixedNormalization(nn.Module):
    """Identity in the ``mean_var_norm`` slot: PaSST's front end normalises with fixed constants,
    which the pretrained weights expect (a running global normalisation would change the input)."""

    def forward(self, feats, lens=None, epoch=None):
        return feats


class PaSST(nn.Module):
    """PaSST encoder: feats [batch, frames, n_mels] (from :class:`PaSSTFrontEnd`) -> [batch, embed_dim].

    Arguments
    ---------
    arch : hear21passt architecture (used when depth / embed_dim / num_heads are null)
    n_mels : mel bins of the input (128 for the published weights)
    input_tdim : frames of the longest clip (998: the 1000 frames of 10 s give the same 99 time patches;
        the time position embedding is cut for shorter clips)
    fstride, tstride : patch strides (10: overlapping 16 x 16 patches, as published)
    s_patchout_t, s_patchout_f : structured patchout, patch columns (time) / rows (frequency) dropped in training
    u_patchout : unstructured patchout, patches dropped in training
    depth, embed_dim, num_heads : a smaller transformer of the same design (all three, or none)
    pretrained_path : local checkpoint loaded into the backbone (never downloaded)

    The padding of shorter clips in a batch is attended to like audio (the
    transformer has no mask; TAU and CochlScene clips have one length each).
    """

    def __init__(self, arch="passt_s_swa_p16_128_ap476", n_mels=128, input_tdim=998, fstride=10, tstride=10,
                 s_patchout_t=0, s_patchout_f=0, u_patchout=0, depth=None, embed_dim=None, num_heads=None,
                 pretrained_path=None):
        super().__init__()
        hp = import_hear21passt()
        custom = [depth, embed_dim, num_heads]
        if any(v is not None for v in custom) and any(v is None for v in custom):
            raise ValueError("PaSST: give depth, embed_dim and num_heads together (a custom size), or none (arch)")
        self.arch, self.n_mels, self.input_tdim = arch, n_mels, input_tdim
        patchout = dict(s_patchout_t=s_patchout_t, s_patchout_f=s_patchout_f, u_patchout=u_patchout)
        with contextlib.redirect_stdout(io.StringIO()):  # hear21passt prints the whole model
            if depth is None:
                self.net = hp.get_model(arch=arch, pretrained=False, n_classes=0, input_fdim=n_mels,
                                        input_tdim=input_tdim, fstride=fstride, tstride=tstride, **patchout)
            else:
                if embed_dim % num_heads:
                    raise ValueError(f"PaSST: embed_dim={embed_dim} is not a multiple of num_heads={num_heads}")
                self.net = hp.PaSST(img_size=(n_mels, input_tdim), patch_size=PATCH_SIZE, stride=(fstride, tstride),
                                    in_chans=1, num_classes=0, embed_dim=embed_dim, depth=depth,
                                    num_heads=num_heads, distilled=True, **patchout)
        self.emb_dim = self.net.embed_dim
        # (frequency, time) patches of a full-length input. hear21passt sizes its position
        # embeddings as size // stride, the number of patches only for sizes with
        # size % stride >= 6 (128 mels, 998 frames): other sizes get embeddings of the real grid.
        self.grid = ((n_mels - PATCH_SIZE) // fstride + 1, (input_tdim - PATCH_SIZE) // tstride + 1)
        if min(self.grid) < 1:
            raise ValueError(f"PaSST: n_mels={n_mels} and input_tdim={input_tdim} must be >= {PATCH_SIZE}")
        if tuple(self.net.patch_embed.grid_size) != self.grid:
            if depth is None:
                raise ValueError(f"PaSST arch {arch}: n_mels={n_mels}, input_tdim={input_tdim} do not fit its "
                                 f"position embeddings (use 128 mels)")
            self.net.patch_embed.grid_size = self.grid
            self.net.freq_new_pos_embed = nn.Parameter(0.02 * torch.randn(1, self.emb_dim, self.grid[0], 1))
            self.net.time_new_pos_embed = nn.Parameter(0.02 * torch.randn(1, self.emb_dim, 1, self.grid[1]))
        if s_patchout_f >= self.grid[0]:
            raise ValueError(f"PaSST: s_patchout_f={s_patchout_f} would drop all {self.grid[0]} frequency patch rows")
        if pretrained_path:
            self.load_pretrained(pretrained_path)
        elif depth is None:
            logger.warning("PaSST %s built with random weights (no pretrained_path): not the AudioSet-pretrained "
                           "model; download %s for that", arch, release_url(arch))

    def load_pretrained(self, path):
        """Load the backbone weights of a local checkpoint (the class layers ``head.1`` / ``head_dist`` are left out)."""
        state = {k: v for k, v in read_checkpoint(path, self.arch).items() if not _is_final_head(k)}
        own = self.net.state_dict()
        time_key = "time_new_pos_embed"
        if time_key in state and time_key in own and state[time_key].shape[-1] > own[time_key].shape[-1]:
            # Shorter clips than the checkpoint's: PaSST itself cuts the time embedding this way.
            state[time_key] = state[time_key][..., : own[time_key].shape[-1]]
        wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if wrong or missing or unexpected:
            raise ValueError(
                f"PaSST pretrained_path {str(path)!r} does not match arch {self.arch} (n_mels={self.n_mels}, "
                f"input_tdim={self.input_tdim}): shapes differ for {wrong[:5]}, missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        self.net.load_state_dict(state)
        logger.info("PaSST backbone loaded from %s (%d tensors)", path, len(state))
        return self

    def forward(self, feats, lens=None):
        n_frames = feats.shape[1]
        if feats.shape[2] != self.n_mels:
            raise ValueError(f"PaSST expects {self.n_mels} mel bins, got features of shape {tuple(feats.shape)}")
        tstride = self.net.patch_embed.stride[1]
        if n_frames < PATCH_SIZE or (n_frames - PATCH_SIZE) // tstride + 1 > self.grid[1]:
            raise ValueError(f"PaSST takes clips of {PATCH_SIZE} frames up to {self.grid[1]} time patches "
                             f"(input_tdim={self.input_tdim}), got {n_frames} frames")
        n_time = (n_frames - PATCH_SIZE) // tstride + 1
        if self.training and self.net.s_patchout_t >= n_time:
            raise ValueError(f"PaSST: s_patchout_t={self.net.s_patchout_t} would drop all {n_time} time patches of "
                             f"{n_frames}-frame training crops")
        with warnings.catch_warnings():
            # Clips shorter than input_tdim are expected: the time position embedding is cut to them.
            warnings.filterwarnings("ignore", message="Input image size")
            normed, _features = self.net(feats.transpose(1, 2).unsqueeze(1))  # [batch, 1, n_mels, frames]
        return normed  # head.0 (LayerNorm) of the token mean: the input of PaSST's linear head


class PaSSTClassifier(nn.Module):
    """PaSST's linear head: embeddings [batch, emb_dim] -> logits [batch, n_classes].

    With ``pretrained_path``, the checkpoint's head (``head.1``) is loaded when
    it has ``n_classes`` outputs; otherwise it is dropped (logged) and the layer
    keeps its initialisation. ``arch`` only names the release in errors.
    """

    def __init__(self, emb_dim, n_classes, pretrained_path=None, arch="passt_s_swa_p16_128_ap476"):
        super().__init__()
        self.linear = nn.Linear(emb_dim, n_classes)
        self.head_loaded = False
        if pretrained_path:
            state = read_checkpoint(pretrained_path, arch)
            weight, bias = state.get("head.1.weight"), state.get("head.1.bias")
            if weight is not None and tuple(weight.shape) == tuple(self.linear.weight.shape):
                self.linear.load_state_dict({"weight": weight, "bias": bias})
                self.head_loaded = True
            else:
                logger.info("PaSST head of %s dropped: %s classes in the checkpoint, %d here", pretrained_path,
                            None if weight is None else weight.shape[0], n_classes)

    def forward(self, emb):
        return self.linear(emb)


def choose(choice, **options):
    """``options[choice]()``: builds only the chosen alternative of a YAML (``!name:`` partials).

        embedding_model: !apply:soundcl.models.passt.choose
            choice: !ref <backbone>
            passt: !name:soundcl.models.passt.PaSST {...}
            dsmn: !name:soundcl.models.dsmn.DSMN {...}
    """
    if choice not in options:
        raise ValueError(f"backbone {choice!r} is not one of {sorted(options)}")
    return options[choice]()
