"""Perturbations used to estimate how uncertain the model is about a clip.

Each perturbation acts at one level of the model:

* ``FeatureMapNoise`` (``noisytune``, ASC-CL's method): on the feature map the
  classifier sees, so the encoder runs once and only pooling + head are re-run k times;
  ``EmbeddingNoise`` (``noisytune_embedding``) is soundcl's earlier variant on the
  pooled embedding with a per-vector scale;
* ``PitchShift`` / ``TimeShift`` (alternated by ``shift``, as ASC-CL),
  ``ColoredNoise`` (``noise``) and ``SpeedChangeAndRoll`` (``speed_roll``): on the
  waveform, so each of the k draws costs a full forward pass;
* ``FeatureMask`` (``mask``): time/frequency masks on the log-mel features
  (front end once, encoder + head k times).

:func:`make_perturbation` turns an ``uncert_metric`` into a *schedule*: an object
whose ``schedule(k, generator)`` lists the perturbation of each of the k draws.

Randomness comes from a ``torch.Generator`` on the CPU handed in by the
caller, so draws are the same on every device; noise is generated on the CPU
and moved to the tensors' device.
"""
import torch
import torch.nn.functional as F

WAVEFORM, FEATURES, FEATURE_MAP, EMBEDDING = "waveform", "features", "feature_map", "embedding"


def _uniform(shape, generator, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)


def _valid_mask(lens, n_samples, device):
    """[batch, n_samples] mask of the samples inside each clip (lens relative)."""
    valid = torch.round(lens.float() * n_samples).clamp(min=1)
    return (torch.arange(n_samples, device=device)[None, :] < valid.to(device)[:, None]).float()


class FeatureMapNoise:
    """ASC-CL's noisytune: ``fmap + U(-1/2, 1/2) * noise_lambda * std(fmap)`` on the
    feature map right before the classifier.

    ``std`` is the standard deviation of the *whole batch tensor* (one number, as
    ASC-CL's ``torch.std(feat)``), so the noise level depends on the batch the clip is
    scored with. ``fmap`` is [batch, channels, ...] (the map of an encoder with
    ``feature_map`` / ``pool``, e.g. :class:`soundcl.models.ascl_bcresnet.ASCCLBCResNet`)
    or, for encoders without a map, the classifier's input [batch, dim]. Each call is
    an independent draw from the clean map: ASC-CL adds its draws in place
    (``feat = out; feat += noise``), so its j-th draw carries the sum of j noises; the
    method described in the paper (k parallel perturbations) is what soundcl does.
    """

    level = FEATURE_MAP

    def __init__(self, noise_lambda=0.2):
        if noise_lambda < 0:
            raise ValueError(f"noise_lambda must be >= 0, got {noise_lambda}")
        self.noise_lambda = float(noise_lambda)

    def __call__(self, fmap, generator, lens=None):
        std = fmap.float().std()
        noise = _uniform(fmap.shape, generator, -0.5, 0.5).to(fmap.device, fmap.dtype)
        return fmap + (self.noise_lambda * std).to(fmap.dtype) * noise

    def __repr__(self):
        return f"FeatureMapNoise(noise_lambda={self.noise_lambda})"


class EmbeddingNoise:
    """soundcl's earlier noisytune variant (``noisytune_embedding``): noise on the pooled
    embedding, ``emb + U(-lambda/2, lambda/2) * std(emb)``.

    ``std`` is the standard deviation of each embedding vector over its
    dimensions, so the noise scales with the embedding. emb [batch, dim] ->
    perturbed [batch, dim]. Relative to the embedding it is much stronger than
    :class:`FeatureMapNoise` (whose noise is averaged away by the pooling).
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
    """Speed change (resampling by up to +-``max_semitones``) then a circular time shift
    (``uncert_metric: speed_roll``; soundcl's earlier ``shift``).

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


class PitchShift:
    """Pitch shift that keeps the duration, by up to +-``max_semitones`` per clip.

    As torch_audiomentations' ``PitchShift`` (ASC-CL's ``shift``), the shift ratio is
    drawn among the "fast" ratios ``p / q`` (``p``, ``q`` divisors of the sample rate
    up to 32) within the range, so the resampling stays cheap: the clip is stretched
    by a phase vocoder (STFT of ``n_fft``) to ``ratio`` times its length, then
    resampled back by ``q / p``. wavs [batch, samples], lens [batch] -> [batch, samples].
    """

    level = WAVEFORM

    def __init__(self, sample_rate, max_semitones=4.0, n_fft=512):
        import torchaudio.functional  # noqa: F401  (fail here, not mid-selection)

        self.sample_rate, self.max_semitones, self.n_fft = int(sample_rate), float(max_semitones), int(n_fft)
        self.ratios = fast_pitch_ratios(self.sample_rate, self.max_semitones)
        if not self.ratios:
            raise ValueError(f"no pitch ratio within +-{max_semitones} semitones for sample rate {sample_rate}")

    def shift(self, clip, ratio):
        """clip [..., samples] -> pitch multiplied by ``ratio`` (a Fraction), same length."""
        import torchaudio.functional as AF

        length = clip.shape[-1]
        hop = self.n_fft // 4
        window = torch.hann_window(self.n_fft, device=clip.device)
        padded = F.pad(clip.float(), (0, max(0, self.n_fft - length)))  # the STFT needs n_fft samples
        spec = torch.stft(padded, self.n_fft, hop, window=window, return_complex=True)
        phase_advance = torch.linspace(0, torch.pi * hop, spec.shape[-2], device=clip.device)[..., None]
        stretched = AF.phase_vocoder(spec, float(1 / ratio), phase_advance)
        longer = torch.istft(stretched, self.n_fft, hop, window=window,
                             length=int(round(padded.shape[-1] * float(ratio))))
        out = AF.resample(longer, ratio.numerator, ratio.denominator)
        out = out[..., :length] if out.shape[-1] >= length else F.pad(out, (0, length - out.shape[-1]))
        return out.to(clip.dtype)

    def __call__(self, wavs, generator, lens=None):
        n_batch, n_samples = wavs.shape
        lens = torch.ones(n_batch) if lens is None else lens.cpu()
        picks = torch.randint(0, len(self.ratios), (n_batch,), generator=generator).tolist()
        lengths = [max(1, int(round(float(lens[i]) * n_samples))) for i in range(n_batch)]
        out = torch.zeros_like(wavs)
        groups = {}
        for i in range(n_batch):  # clips with the same ratio and length are shifted together
            groups.setdefault((picks[i], lengths[i]), []).append(i)
        for (pick, length), rows in groups.items():
            out[rows, :length] = self.shift(wavs[rows, :length], self.ratios[pick])
        return out

    def __repr__(self):
        return f"PitchShift(sample_rate={self.sample_rate}, max_semitones={self.max_semitones})"


def fast_pitch_ratios(sample_rate, max_semitones, max_term=32):
    """Ratios ``p / q != 1`` (Fractions) within +-``max_semitones``, ``p`` and ``q``
    divisors of ``sample_rate`` no larger than ``max_term``, sorted."""
    from fractions import Fraction

    divisors = [d for d in range(1, max_term + 1) if sample_rate % d == 0]
    low, high = 2.0 ** (-max_semitones / 12.0), 2.0 ** (max_semitones / 12.0)
    return sorted({Fraction(p, q) for p in divisors for q in divisors if p != q and low <= p / q <= high})


class TimeShift:
    """Circular time shift by a fraction of the clip drawn in [-``max_shift``, ``max_shift``]
    (torch_audiomentations' ``Shift`` defaults, as ASC-CL: 0.5 of the length, rollover).

    wavs [batch, samples], lens [batch] -> [batch, samples] (the padding stays in place).
    """

    level = WAVEFORM

    def __init__(self, max_shift=0.5):
        self.max_shift = float(max_shift)

    def __call__(self, wavs, generator, lens=None):
        n_batch, n_samples = wavs.shape
        lens = torch.ones(n_batch) if lens is None else lens.cpu()
        shifts = _uniform((n_batch,), generator, -self.max_shift, self.max_shift)
        out = wavs.clone()
        for i in range(n_batch):
            length = max(1, int(round(float(lens[i]) * n_samples)))
            out[i, :length] = torch.roll(wavs[i, :length], int(round(float(shifts[i]) * length)))
        return out

    def __repr__(self):
        return f"TimeShift(max_shift={self.max_shift})"


class ColoredNoise:
    """Additive coloured noise (power spectrum ~ f ** exponent) at a random SNR.

    ``exponent`` is drawn in [``min_exponent``, ``max_exponent``] (0 white,
    -1 pink, -2 brown, +1 blue ...), the SNR in [``min_snr_db``, ``max_snr_db``]
    (defaults: those of torch_audiomentations' ``AddColoredNoise`` that ASC-CL uses,
    3-30 dB, decay -2..2).
    wavs [batch, samples], lens [batch] -> [batch, samples].
    """

    level = WAVEFORM

    def __init__(self, min_snr_db=3.0, max_snr_db=30.0, min_exponent=-2.0, max_exponent=2.0):
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


class Repeat:
    """The same perturbation for each of the k draws."""

    def __init__(self, perturbation):
        self.perturbation = perturbation

    def schedule(self, k, generator):
        return [self.perturbation] * k

    def __repr__(self):
        return f"Repeat({self.perturbation!r})"


class Alternate:
    """Draw ``i`` uses ``perturbations[i % n]`` (ASC-CL's ``shift``: ``[PitchShift, Shift] * (k // 2)``);
    ``k`` must be a multiple of ``n``, as ASC-CL only runs k/2 draws of each."""

    def __init__(self, perturbations):
        self.perturbations = list(perturbations)

    def schedule(self, k, generator):
        if k % len(self.perturbations):
            raise ValueError(f"metric_k={k} must be a multiple of {len(self.perturbations)} to alternate "
                             f"{', '.join(map(repr, self.perturbations))}")
        return [self.perturbations[i % len(self.perturbations)] for i in range(k)]

    def __repr__(self):
        return f"Alternate({self.perturbations!r})"


class ShuffledPool:
    """The first k of a random permutation of ``perturbations``, drawn once per selection
    (ASC-CL's ``combination``: its six transforms shuffled, the first k kept)."""

    def __init__(self, perturbations):
        self.perturbations = list(perturbations)

    def schedule(self, k, generator):
        if k > len(self.perturbations):
            raise ValueError(f"metric_k={k} is larger than the {len(self.perturbations)} perturbations of the pool")
        order = torch.randperm(len(self.perturbations), generator=generator).tolist()
        return [self.perturbations[i] for i in order[:k]]

    def __repr__(self):
        return f"ShuffledPool({self.perturbations!r})"


UNCERT_METRICS = ("noisytune", "noisytune_embedding", "shift", "speed_roll", "noise", "mask", "combination")


def make_perturbation(metric, noise_lambda=0.2, sample_rate=None):
    """The draw schedule named by ``uncert_metric`` (see :data:`UNCERT_METRICS`).

    ``shift`` needs ``sample_rate`` (the pitch shift's fast ratios depend on it).
    """
    if metric == "noisytune":
        return Repeat(FeatureMapNoise(noise_lambda))
    if metric == "noisytune_embedding":
        return Repeat(EmbeddingNoise(noise_lambda))
    if metric in ("shift", "combination") and sample_rate is None:
        raise ValueError(f"uncert_metric={metric} needs the sample rate")
    if metric == "shift":
        return Alternate([PitchShift(sample_rate), TimeShift()])
    if metric == "speed_roll":
        return Repeat(SpeedChangeAndRoll())
    if metric == "noise":
        return Repeat(ColoredNoise())
    if metric == "mask":
        return Repeat(FeatureMask())
    if metric == "combination":
        # ASC-CL's pool: time mask, frequency mask, two coloured noises, pitch shift, shift.
        return ShuffledPool([FeatureMask(n_freq=0), FeatureMask(n_time=0), ColoredNoise(), ColoredNoise(),
                             PitchShift(sample_rate), TimeShift()])
    raise ValueError(f"unknown uncert_metric {metric!r}: expected one of {', '.join(UNCERT_METRICS)}")


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

