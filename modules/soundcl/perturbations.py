"""Perturbations used to estimate how uncertain the model is about a clip.

Each perturbation acts at one level of the model:

* ``EmbeddingNoise`` (``noisytune``): on the classifier's input embedding,
  so the encoder runs once and only the head is re-run k times;
* ``SpeedChangeAndRoll`` (``shift``) and ``ColoredNoise`` (``noise``): on the
  waveform, so each of the k draws costs a full forward pass;
* ``FeatureMask`` (``mask``): time/frequency masks on the log-mel features
  (front end once, encoder + head k times).

Randomness comes from a ``torch.Generator`` on the CPU handed in by the
caller, so draws are the same on every device; noise is generated on the CPU
and moved to the tensors' device.
"""
import torch
import torch.nn.functional as F

WAVEFORM, FEATURES, EMBEDDING = "waveform", "features", "embedding"


def _uniform(shape, generator, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)


def _valid_mask(lens, n_samples, device):
    """[batch, n_samples] mask of the samples inside each clip (lens relative)."""
    valid = torch.round(lens.float() * n_samples).clamp(min=1)
    return (torch.arange(n_samples, device=device)[None, :] < valid.to(device)[:, None]).float()


class EmbeddingNoise:
    """NoisyTune-style noise on embeddings: ``emb + U(-lambda/2, lambda/2) * std(emb)``.

    ``std`` is the standard deviation of each embedding vector over its
    dimensions, so the noise scales with the embedding. emb [batch, dim] ->
    perturbed [batch, dim].
    """

    level = EMBEDDING

    def __init__(self, noise_lambda=0.1):
        if noise_lambda < 0:
            raise ValueError(f"noise_lambda must be >= 0, got {noise_lambda}")
        self.noise_lambda = float(noise_lambda)

    def __call__(self, emb, generator, lens=None):
        std = emb.float().std(dim=-1, keepdim=True)
        noise = _uniform(emb.shape, generator, -0.5, 0.5).to(emb.device, emb.dtype)
        return emb + self.noise_lambda * noise * std.to(emb.dtype)


class SpeedChangeAndRoll:
    """Speed change (resampling by up to +-``max_semitones``) then a circular time shift.

    Not a pitch shift: the clip is read at speed ``2 ** (s / 12)``, so pitch and
    tempo change together (as a tape would), then trimmed or zero-padded back
    to its length; the roll moves the clip by up to ``max_shift`` of its length.
    wavs [batch, samples], lens [batch] -> [batch, samples].
    """

    level = WAVEFORM

    def __init__(self, max_semitones=4.0, max_shift=0.5):
        self.max_semitones = float(max_semitones)
        self.max_shift = float(max_shift)

    def __call__(self, wavs, generator, lens=None):
        n_batch, n_samples = wavs.shape
        lens = torch.ones(n_batch) if lens is None else lens.cpu()
        semitones = _uniform((n_batch,), generator, -self.max_semitones, self.max_semitones)
        shifts = _uniform((n_batch,), generator, -self.max_shift, self.max_shift)
        out = torch.zeros_like(wavs)
        for i in range(n_batch):
            length = max(1, int(round(float(lens[i]) * n_samples)))
            clip = wavs[i, :length]
            rate = 2.0 ** (float(semitones[i]) / 12.0)
            new_length = max(1, int(round(length / rate)))
            clip = F.interpolate(clip[None, None], size=new_length, mode="linear", align_corners=False)[0, 0]
            clip = clip[:length] if new_length >= length else F.pad(clip, (0, length - new_length))
            clip = torch.roll(clip, int(round(float(shifts[i]) * length)))
            out[i, :length] = clip
        return out


class ColoredNoise:
    """Additive coloured noise (power spectrum ~ f ** exponent) at a random SNR.

    ``exponent`` is drawn in [``min_exponent``, ``max_exponent``] (0 white,
    -1 pink, -2 brown, +1 blue ...), the SNR in [``min_snr_db``, ``max_snr_db``].
    wavs [batch, samples], lens [batch] -> [batch, samples].
    """

    level = WAVEFORM

    def __init__(self, min_snr_db=5.0, max_snr_db=30.0, min_exponent=-2.0, max_exponent=2.0):
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        self.min_exponent, self.max_exponent = float(min_exponent), float(max_exponent)

    def __call__(self, wavs, generator, lens=None):
        n_batch, n_samples = wavs.shape
        white = torch.randn((n_batch, n_samples), generator=generator)
        exponent = _uniform((n_batch, 1), generator, self.min_exponent, self.max_exponent)
        snr_db = _uniform((n_batch, 1), generator, self.min_snr_db, self.max_snr_db)
        spectrum = torch.fft.rfft(white, dim=-1)
        freqs = torch.arange(spectrum.shape[-1], dtype=torch.float32).clamp(min=1.0)
        spectrum = spectrum * freqs[None, :] ** (exponent / 2.0)
        noise = torch.fft.irfft(spectrum, n=n_samples, dim=-1).to(wavs.device, wavs.dtype)
        mask = _valid_mask(lens, n_samples, wavs.device) if lens is not None else torch.ones_like(wavs)
        noise = noise * mask
        count = mask.sum(-1, keepdim=True).clamp(min=1)
        signal_power = (wavs.float() ** 2 * mask).sum(-1, keepdim=True) / count
        noise_power = (noise.float() ** 2).sum(-1, keepdim=True) / count
        scale = torch.sqrt(signal_power / (noise_power.clamp(min=1e-12) * 10 ** (snr_db.to(wavs.device) / 10.0)))
        return wavs + noise * scale.to(wavs.dtype)


class FeatureMask:
    """SpecAugment-style masks: ``n_time`` time stripes of up to ``time_width``
    frames and ``n_freq`` mel stripes of up to ``freq_width`` bins set to 0.

    feats [batch, frames, n_mels] -> [batch, frames, n_mels].
    """

    level = FEATURES

    def __init__(self, time_width=20, n_time=2, freq_width=8, n_freq=2):
        self.time_width, self.n_time = int(time_width), int(n_time)
        self.freq_width, self.n_freq = int(freq_width), int(n_freq)

    def __call__(self, feats, generator, lens=None):
        n_batch, n_frames, n_mels = feats.shape
        keep = torch.ones(n_batch, n_frames, n_mels)
        for axis, width, count, size in ((1, self.time_width, self.n_time, n_frames), (2, self.freq_width, self.n_freq, n_mels)):
            for _ in range(count):
                widths = torch.randint(0, max(1, min(width, size)) + 1, (n_batch,), generator=generator)
                starts = (torch.rand(n_batch, generator=generator) * (size - widths + 1).float()).long()
                for i in range(n_batch):
                    index = [i, slice(None), slice(None)]
                    index[axis] = slice(int(starts[i]), int(starts[i] + widths[i]))
                    keep[tuple(index)] = 0.0
        return feats * keep.to(feats.device, feats.dtype)


class RandomChoice:
    """Each call applies one of ``perturbations`` drawn at random (``combination``).

    All must act at the same level, or the caller must handle mixed levels
    (:func:`soundcl.memory.perturbed_predictions` does: it runs each draw at
    the level of the perturbation drawn).
    """

    level = "mixed"

    def __init__(self, perturbations):
        if not perturbations:
            raise ValueError("RandomChoice needs at least one perturbation")
        self.perturbations = list(perturbations)

    def draw(self, generator):
        index = int(torch.randint(0, len(self.perturbations), (1,), generator=generator))
        return self.perturbations[index]


def make_perturbation(metric, noise_lambda=0.1):
    """The perturbation named by ``uncert_metric``: noisytune, shift, noise, mask or combination."""
    if metric == "noisytune":
        return EmbeddingNoise(noise_lambda)
    if metric == "shift":
        return SpeedChangeAndRoll()
    if metric == "noise":
        return ColoredNoise()
    if metric == "mask":
        return FeatureMask()
    if metric == "combination":
        return RandomChoice([SpeedChangeAndRoll(), ColoredNoise(), FeatureMask()])
    raise ValueError(
        f"unknown uncert_metric {metric!r}: expected noisytune, shift, noise, mask or combination"
    )


def vote_uncertainty(predictions):
    """Uncertainty from k predicted classes per clip: ``1 - votes_of_mode / k``.

    predictions : LongTensor [n_clips, k] -> FloatTensor [n_clips] in [0, 1 - 1/k].
    """
    if predictions.dim() != 2 or predictions.shape[1] == 0:
        raise ValueError(f"predictions must be [n_clips, k>0], got shape {tuple(predictions.shape)}")
    k = predictions.shape[1]
    sorted_preds, _ = predictions.sort(dim=1)
    # Longest run of equal values in each sorted row = votes of the most frequent class.
    best = torch.ones(predictions.shape[0], dtype=torch.long)
    run = torch.ones(predictions.shape[0], dtype=torch.long)
    for j in range(1, k):
        same = sorted_preds[:, j] == sorted_preds[:, j - 1]
        run = torch.where(same, run + 1, torch.ones_like(run))
        best = torch.maximum(best, run)
    return 1.0 - best.float() / k

