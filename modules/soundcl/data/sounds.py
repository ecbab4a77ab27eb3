"""The ten sound types of the synthetic data (:data:`CLASS_NAMES`), as signal generators.

Each generator ``maker(rng, length, sample_rate)`` returns one event (a float array of
``length`` samples, not normalised) whose frequencies, rates and so on are drawn from
``rng``, so that a model must learn the sound type rather than one waveform. They serve
:mod:`soundcl.data.synthetic` (whole clips in the UrbanSound8K layout) and
:func:`render_clip` (clips of any class count, for the miniatures of other data sets).
"""

import numpy as np

#: Class names in classID order.
CLASS_NAMES = [
    "tone_burst",
    "up_chirp",
    "pink_noise",
    "brown_noise",
    "click_train",
    "am_tone",
    "fm_tone",
    "harmonic_stack",
    "white_noise_burst",
    "down_chirp",
]


def fade(length, sample_rate, fade_s=0.005):
    """Envelope (array of ``length``): short linear fade in/out, so events do not start
    or end with a click."""
    env = np.ones(length)
    n = min(int(fade_s * sample_rate), length // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, endpoint=False)
        env[:n] = ramp
        env[length - n:] = ramp[::-1]
    return env


def time_axis(length, sample_rate):
    """Times in seconds of ``length`` samples."""
    return np.arange(length) / sample_rate


def gate(t, on_s, period_s, ramp_s=0.004):
    """Periodic on/off envelope (array like ``t``): ``on_s`` seconds on every ``period_s`` seconds."""
    phase = np.mod(t, period_s)
    return np.clip(np.minimum(phase / ramp_s, (on_s - phase) / ramp_s), 0.0, 1.0)


def _colored_noise(rng, length, sample_rate, exponent, cutoff_hz=None):
    """Noise with amplitude spectrum ~ 1/f**exponent (0.5 pink, 1 brown), optionally
    low-passed (2nd-order-like roll-off above ``cutoff_hz``)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    shape = 1.0 / np.maximum(freqs, 20.0) ** exponent  # floor at 20 Hz: no DC blow-up
    if cutoff_hz is not None:
        shape /= 1.0 + (freqs / cutoff_hz) ** 2
    return np.fft.irfft(spectrum * shape, n=length)


def _sweep(rng, length, sample_rate, upward):
    """Exponential sine sweep between a low and a high frequency."""
    t = time_axis(length, sample_rate)
    low = rng.uniform(150.0, 600.0)
    high = rng.uniform(2000.0, min(6000.0, 0.4 * sample_rate))
    f0, f1 = (low, high) if upward else (high, low)
    duration = length / sample_rate
    k = np.log(f1 / f0) / duration
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _tone_burst(rng, length, sample_rate):
    t = time_axis(length, sample_rate)
    freq = rng.uniform(300.0, 2500.0)
    on = rng.uniform(0.05, 0.15)
    period = on + rng.uniform(0.05, 0.2)
    return gate(t, on, period) * np.sin(2 * np.pi * freq * t)


def _up_chirp(rng, length, sample_rate):
    return _sweep(rng, length, sample_rate, upward=True)


def _down_chirp(rng, length, sample_rate):
    return _sweep(rng, length, sample_rate, upward=False)


def _pink_noise(rng, length, sample_rate):
    return _colored_noise(rng, length, sample_rate, exponent=rng.uniform(0.4, 0.6))


def _brown_noise(rng, length, sample_rate):
    return _colored_noise(
        rng, length, sample_rate, exponent=rng.uniform(0.9, 1.1), cutoff_hz=rng.uniform(200, 800)
    )


def _click_train(rng, length, sample_rate):
    rate = rng.uniform(4.0, 25.0)
    # Click times with a little jitter around a steady rate.
    times = np.arange(0.0, length / sample_rate, 1.0 / rate)
    times = times + rng.uniform(-0.1, 0.1, size=times.size) / rate
    impulses = np.zeros(length)
    idx = np.clip((times * sample_rate).astype(int), 0, length - 1)
    impulses[idx] = rng.uniform(0.6, 1.0, size=idx.size)
    # Each click: a damped resonance of a few milliseconds.
    kernel_t = time_axis(int(0.006 * sample_rate), sample_rate)
    kernel = np.exp(-kernel_t / rng.uniform(0.0005, 0.0015)) * np.sin(
        2 * np.pi * rng.uniform(1500.0, 4000.0) * kernel_t + np.pi / 2
    )
    return np.convolve(impulses, kernel)[:length]


def _am_tone(rng, length, sample_rate):
    t = time_axis(length, sample_rate)
    carrier = rng.uniform(300.0, 1500.0)
    mod_rate = rng.uniform(2.0, 12.0)
    depth = rng.uniform(0.6, 1.0)
    envelope = 1.0 - depth / 2 + (depth / 2) * np.cos(2 * np.pi * mod_rate * t)
    return envelope * np.sin(2 * np.pi * carrier * t)


def _fm_tone(rng, length, sample_rate):
    t = time_axis(length, sample_rate)
    carrier = rng.uniform(500.0, 2000.0)
    mod_rate = rng.uniform(3.0, 10.0)
    deviation = rng.uniform(50.0, 300.0)
    vibrato = (deviation / mod_rate) * np.sin(2 * np.pi * mod_rate * t)
    return np.sin(2 * np.pi * carrier * t + vibrato)


def _harmonic_stack(rng, length, sample_rate):
    t = time_axis(length, sample_rate)
    f0 = rng.uniform(100.0, 350.0)
    n_harmonics = int(rng.integers(4, 11))
    signal = np.zeros(length)
    for k in range(1, n_harmonics + 1):
        if k * f0 >= 0.45 * sample_rate:
            break
        amplitude = rng.uniform(0.5, 1.0) / k
        signal += amplitude * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return signal


def _white_noise_burst(rng, length, sample_rate):
    t = time_axis(length, sample_rate)
    on = rng.uniform(0.08, 0.3)
    period = on + rng.uniform(0.05, 0.3)
    # Sharp attack and exponential decay inside each burst tell it apart from the
    # stationary noises.
    decay = np.exp(-np.mod(t, period) / (on / 3))
    return gate(t, on, period, ramp_s=0.001) * decay * rng.standard_normal(length)


EVENT_MAKERS = [
    _tone_burst,
    _up_chirp,
    _pink_noise,
    _brown_noise,
    _click_train,
    _am_tone,
    _fm_tone,
    _harmonic_stack,
    _white_noise_burst,
    _down_chirp,
]
assert len(EVENT_MAKERS) == len(CLASS_NAMES)


def render_clip(class_id, n_frames, sample_rate, rng, channels=1):
    """One clip of synthetic class ``class_id`` (for the miniatures of other data sets).

    Classes 0-9 are the sound types of :data:`CLASS_NAMES`; class ``c >= 10`` reuses
    type ``c % 10`` under a periodic gate whose rate depends on ``c // 10``, so any
    number of classes stays distinguishable.

    Arguments
    ---------
    class_id : int
    n_frames : int
        Length in samples.
    sample_rate : int
    rng : numpy.random.Generator
        Source of every random choice (seed it per clip for reproducible bytes).
    channels : int

    Returns
    -------
    numpy.ndarray [n_frames, channels], float in [-1, 1].
    """
    maker = EVENT_MAKERS[class_id % len(EVENT_MAKERS)]
    onset = int(rng.uniform(0.0, 0.2) * n_frames)
    length = max(1, n_frames - onset - int(rng.uniform(0.0, 0.1) * n_frames))
    event = maker(rng, length, sample_rate)
    event = event / (np.max(np.abs(event)) + 1e-12)
    variant = class_id // len(EVENT_MAKERS)
    if variant:
        period = 0.5 / variant
        event = event * gate(time_axis(length, sample_rate), period / 2, period)
    event = event * fade(length, sample_rate)
    peak = 10.0 ** (rng.uniform(-20.0, -6.0) / 20.0)
    noise_rms = 10.0 ** (rng.uniform(-62.0, -48.0) / 20.0)
    audio = noise_rms * rng.standard_normal((n_frames, channels))
    audio[onset:onset + length] += peak * event[:, None]
    return np.clip(audio, -1.0, 1.0)
