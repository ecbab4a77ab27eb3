"""torchlibrosa log-mel front end, batch-norm over mel bins and SpecAugment.

These fill the ``compute_features`` / ``mean_var_norm`` / ``augmentation``
slots of :class:`soundcl.core.brains.ContinualFeatureBrain`, so the on-device models
share the Brain of every other recipe.
"""
import torch.nn as nn
from torchlibrosa.augmentation import SpecAugmentation
from torchlibrosa.stft import LogmelFilterBank, Spectrogram


class LogMelFrontEnd(nn.Module):
    """STFT magnitude -> mel filter bank -> log (torchlibrosa, fixed weights).

    Defaults are those of the published on-device recipes: window 1024,
    hop 320, 64 mels from 50 Hz to 14 kHz (``fmax`` is clipped to Nyquist).

    forward: wavs [batch, samples] -> feats [batch, frames, n_mels].
    """

    def __init__(self, sample_rate, n_fft=1024, hop_length=320, n_mels=64, fmin=50.0, fmax=14000.0):
        super().__init__()
        fmax = min(float(fmax), sample_rate / 2.0)
        if not 0 <= fmin < fmax:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
        self.spectrogram = Spectrogram(
            n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window="hann",
            center=True, pad_mode="reflect", freeze_parameters=True,
        )
        self.logmel = LogmelFilterBank(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
            ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True,
        )

    def forward(self, wavs):
        return self.logmel(self.spectrogram(wavs.float())).squeeze(1)  # [B, 1, T, M] -> [B, T, M]


class MelBatchNorm(nn.Module):
    """Batch-norm over mel bins (one mean/variance per bin, learnt affine).

    Takes the ``mean_var_norm`` call of the Brain: ``(feats, lens, epoch=None)``,
    feats [batch, frames, n_mels] -> same shape. Padding frames take part in the
    batch statistics during training, as in the published models.

    ``momentum=None`` keeps a cumulative average of the statistics: log-mels are
    far from zero mean / unit variance, so the default exponential average
    would need many steps before evaluation could use it.
    """

    def __init__(self, n_mels, momentum=None):
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels, momentum=momentum)

    def forward(self, feats, lens=None, epoch=None):
        return self.norm(feats.transpose(1, 2)).transpose(1, 2)


class SpecAugment(nn.Module):
    """torchlibrosa SpecAugmentation on [batch, frames, n_mels] features.

    Used as the Brain's ``augmentation`` (applied in the TRAIN stage only).
    """

    def __init__(self, time_drop_width=64, time_stripes_num=2, freq_drop_width=8, freq_stripes_num=2):
        super().__init__()
        self.augment = SpecAugmentation(time_drop_width, time_stripes_num, freq_drop_width, freq_stripes_num)
        self.time_drop_width, self.freq_drop_width = time_drop_width, freq_drop_width

    def forward(self, feats):
        # torchlibrosa fails with an obscure randint error on stripes wider than the input.
        if feats.shape[1] <= self.time_drop_width or feats.shape[2] <= self.freq_drop_width:
            raise ValueError(
                f"SpecAugment stripes (time {self.time_drop_width}, freq {self.freq_drop_width}) must be "
                f"narrower than the features [frames={feats.shape[1]}, n_mels={feats.shape[2]}]"
            )
        return self.augment(feats.unsqueeze(1)).squeeze(1)
