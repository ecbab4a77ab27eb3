"""Embedded synthetic sound-class data set in the UrbanSound8K layout.

It lets the recipes and tests run end to end without downloading anything: the data is
written exactly like UrbanSound8K (``metadata/UrbanSound8K.csv`` with the real header,
``audio/fold{f}/{fsID}-{classID}-0-{n}.wav``), so it goes through
:func:`soundcl.data.us8k.prepare` like the real corpus.

Ten classes of clearly different synthetic sounds (see :data:`CLASS_NAMES`). Each clip
draws its own frequencies, rates, level, onset and length, and gets a little background
noise, so a model must learn the sound type rather than one fixed waveform. Like the
real corpus, files mix sample rates (16, 22.05, 44.1 kHz), mono/stereo and sample
formats (16-bit, 24-bit, unsigned 8-bit), independently of the class.

Everything is drawn from ``numpy.random.default_rng`` seeded per clip with
``(seed, classID, fold, clip index)``, so the same parameters always give the same bytes.
"""

import csv
import json
import logging
import os
import re

import numpy as np
import soundfile

from soundcl.data import us8k
from soundcl.data.common import atomic_write_text, write_json_atomic

logger = logging.getLogger(__name__)

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
SAMPLE_RATES = (16000, 22050, 44100)
#: Sample formats and how often each is drawn.
SUBTYPES = ("PCM_16", "PCM_24", "PCM_U8")
SUBTYPE_PROBS = (0.6, 0.25, 0.15)
STEREO_PROB = 0.35
MIN_DURATION, MAX_DURATION = 0.5, 2.0
#: Clips per Freesound-like source recording; slices of one source share an fsID (and a
#: fold), as in UrbanSound8K.
SLICES_PER_SOURCE = 3

OPTS_FILE = "synthetic_opts.json"
#: Bump when the generated audio or metadata change, so old sets are regenerated.
GENERATOR_VERSION = 1

_FOLD_DIR = re.compile(r"^fold\d+$")


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def generate(data_folder, clips_per_class_per_fold=6, n_classes=10, n_folds=10, seed=1234):
    """Write the synthetic data set into ``data_folder`` (UrbanSound8K layout).

    Nothing is written when ``data_folder`` already holds a complete set made with the
    same parameters. An interrupted generation is detected and redone.

    Arguments
    ---------
    data_folder : str
        Destination; created if needed. It must not hold a foreign (e.g. the real)
        UrbanSound8K metadata file.
    clips_per_class_per_fold : int
        Clips of every class in every fold.
    n_classes : int
        Number of classes, 1..10 (the first ``n_classes`` of :data:`CLASS_NAMES`).
    n_folds : int
        Number of folds, 1..10.
    seed : int
        Seed; the same parameters give byte-identical files.

    Returns
    -------
    str
        ``data_folder``.
    """
    params = _check_params(clips_per_class_per_fold, n_classes, n_folds, seed)
    metadata_file = os.path.join(data_folder, us8k.METADATA_RELPATH)
    opts_file = os.path.join(data_folder, OPTS_FILE)

    if _is_complete(data_folder, params):
        logger.info("Synthetic data in %s is up to date, not regenerating", data_folder)
        return data_folder
    if os.path.exists(metadata_file) and not os.path.exists(opts_file):
        raise FileExistsError(
            f"{metadata_file} exists but was not written by the synthetic generator "
            f"(no {OPTS_FILE}); refusing to overwrite it. Use another data_folder."
        )

    logger.info("Generating synthetic data in %s (%s)", data_folder, params)
    # Mark the set incomplete *before* touching anything, then drop the old metadata:
    # until the new metadata and the final marker are written, the folder reads as
    # unfinished and is regenerated on the next call.
    os.makedirs(data_folder, exist_ok=True)
    write_json_atomic(opts_file, {**params, "complete": False})
    if os.path.exists(metadata_file):
        os.remove(metadata_file)

    rows = []
    for clip in _clip_plan(params):
        wav_dir = os.path.join(data_folder, us8k.AUDIO_DIRNAME, f"fold{clip['fold']}")
        os.makedirs(wav_dir, exist_ok=True)
        audio, sample_rate, subtype = _synthesize(clip, params["seed"])
        soundfile.write(
            os.path.join(wav_dir, clip["slice_file_name"]),
            audio,
            sample_rate,
            subtype=subtype,
            format="WAV",
        )
        rows.append(clip)
    _remove_stale_audio(data_folder, {(r["fold"], r["slice_file_name"]) for r in rows})

    _write_metadata(metadata_file, rows)
    write_json_atomic(opts_file, {**params, "complete": True})
    logger.info("Wrote %d synthetic clips to %s", len(rows), data_folder)
    return data_folder


def prepare(
    data_folder,
    save_folder,
    task_classes=us8k.DEFAULT_TASK_CLASSES,
    train_folds=us8k.DEFAULT_TRAIN_FOLDS,
    valid_folds=us8k.DEFAULT_VALID_FOLDS,
    test_folds=us8k.DEFAULT_TEST_FOLDS,
    clips_per_class_per_fold=6,
    seed=1234,
    skip_prep=False,
):
    """Generate the synthetic set (if needed) and prepare it with :func:`us8k.prepare`.

    Takes the arguments of :func:`soundcl.data.us8k.prepare` plus those of
    :func:`generate`, and returns the same dict (``classes``, ``n_tasks``,
    ``manifests``). With ``skip_prep=True`` nothing is generated or written.
    """
    if not skip_prep:
        generate(data_folder, clips_per_class_per_fold=clips_per_class_per_fold, seed=seed)
    return us8k.prepare(
        data_folder,
        save_folder,
        task_classes=task_classes,
        train_folds=train_folds,
        valid_folds=valid_folds,
        test_folds=test_folds,
        skip_prep=skip_prep,
    )


# ---------------------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------------------
def _check_params(clips_per_class_per_fold, n_classes, n_folds, seed):
    for name, value, low, high in (
        ("clips_per_class_per_fold", clips_per_class_per_fold, 1, None),
        ("n_classes", n_classes, 1, len(CLASS_NAMES)),
        ("n_folds", n_folds, 1, us8k.N_FOLDS),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            limits = f"{low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"{name} must be {limits}, got {value}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return {
        "generator_version": GENERATOR_VERSION,
        "clips_per_class_per_fold": int(clips_per_class_per_fold),
        "n_classes": int(n_classes),
        "n_folds": int(n_folds),
        "seed": int(seed),
    }


def _is_complete(data_folder, params):
    """Whether ``data_folder`` holds a finished set generated with ``params``."""
    opts_file = os.path.join(data_folder, OPTS_FILE)
    metadata_file = os.path.join(data_folder, us8k.METADATA_RELPATH)
    try:
        with open(opts_file, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return False
    if stored != {**params, "complete": True} or not os.path.isfile(metadata_file):
        return False
    try:
        entries, _ = us8k.read_metadata(metadata_file)
    except ValueError:
        return False
    audio_folder = os.path.join(data_folder, us8k.AUDIO_DIRNAME)
    return all(
        os.path.isfile(os.path.join(audio_folder, f"fold{e['fold']}", e["slice_file_name"]))
        for e in entries
    )


def _remove_stale_audio(data_folder, keep):
    """Delete wav files of an earlier generation that the new metadata does not list.

    Only called once the folder is known to be ours (it holds our opts file).
    """
    audio_folder = os.path.join(data_folder, us8k.AUDIO_DIRNAME)
    for fold_dir in os.listdir(audio_folder):
        if not _FOLD_DIR.match(fold_dir):
            continue
        fold = int(fold_dir[len("fold"):])
        for name in os.listdir(os.path.join(audio_folder, fold_dir)):
            if name.endswith(".wav") and (fold, name) not in keep:
                os.remove(os.path.join(audio_folder, fold_dir, name))


def _write_metadata(metadata_file, rows):
    """Write ``UrbanSound8K.csv`` (real header, rows sorted by file name) atomically."""

    def _write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(us8k.METADATA_COLUMNS)
        for row in sorted(rows, key=lambda r: r["slice_file_name"]):
            writer.writerow([row[c] for c in us8k.METADATA_COLUMNS])

    atomic_write_text(metadata_file, _write)


def _clip_plan(params):
    """List every clip with its metadata (file name, fsID, start/end, ...).

    Clips of one class and fold are grouped into "source recordings" of
    :data:`SLICES_PER_SOURCE` consecutive slices sharing an fsID, like UrbanSound8K's
    Freesound sources. fsIDs are distinct 5-6 digit numbers drawn from the seed.
    """
    n_classes, n_folds = params["n_classes"], params["n_folds"]
    per_cell = params["clips_per_class_per_fold"]
    sources_per_cell = -(-per_cell // SLICES_PER_SOURCE)  # ceil division
    n_sources = n_classes * n_folds * sources_per_cell
    id_rng = np.random.default_rng([params["seed"], 7])
    fs_ids = (id_rng.choice(890000, size=n_sources, replace=False) + 10000).tolist()

    plan = []
    source = 0
    for fold in range(1, n_folds + 1):
        for class_id in range(n_classes):
            start = 0.0
            for clip_idx in range(per_cell):
                slice_idx = clip_idx % SLICES_PER_SOURCE
                if slice_idx == 0:
                    fs_id = fs_ids[source]
                    source += 1
                    rng = _clip_rng(params["seed"], class_id, fold, clip_idx, "meta")
                    start = round(float(rng.uniform(0.0, 30.0)), 6)
                    salience = int(rng.integers(1, 3))
                duration = _clip_duration(params["seed"], class_id, fold, clip_idx)
                plan.append(
                    {
                        "slice_file_name": f"{fs_id}-{class_id}-0-{slice_idx}.wav",
                        "fsID": fs_id,
                        "start": start,
                        "end": round(start + duration, 6),
                        "salience": salience,
                        "fold": fold,
                        "classID": class_id,
                        "class": CLASS_NAMES[class_id],
                        "clip_idx": clip_idx,
                        "duration": duration,
                    }
                )
                start = round(start + duration, 6)
    return plan


# ---------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------
_PURPOSES = {"meta": 0, "duration": 1, "audio": 2}


def _clip_rng(seed, class_id, fold, clip_idx, purpose):
    """Independent random stream per clip and purpose.

    Seeding per clip (rather than one stream for the whole set) keeps each clip the same
    whatever the other parameters, and lets the plan know a clip's length without
    synthesizing it.
    """
    return np.random.default_rng([seed, class_id, fold, clip_idx, _PURPOSES[purpose]])


def _clip_duration(seed, class_id, fold, clip_idx):
    rng = _clip_rng(seed, class_id, fold, clip_idx, "duration")
    # Rounded to ms so that the metadata start/end values stay short.
    return round(float(rng.uniform(MIN_DURATION, MAX_DURATION)), 3)


def _synthesize(clip, seed):
    """Make one clip. Returns ``(audio [frames, channels] float, sample_rate, subtype)``."""
    rng = _clip_rng(seed, clip["classID"], clip["fold"], clip["clip_idx"], "audio")
    sample_rate = int(rng.choice(SAMPLE_RATES))
    channels = 2 if rng.random() < STEREO_PROB else 1
    subtype = str(rng.choice(SUBTYPES, p=SUBTYPE_PROBS))
    n_frames = int(round(clip["duration"] * sample_rate))

    # The sound event starts somewhere in the first 30% of the clip and lasts at least
    # 0.3 s, so every clip holds a clear example of its class.
    onset = int(rng.uniform(0.0, 0.3) * n_frames)
    length = max(int(0.3 * sample_rate), int(rng.uniform(0.6, 1.0) * (n_frames - onset)))
    length = min(length, n_frames - onset)
    event = _EVENT_MAKERS[clip["classID"]](rng, length, sample_rate)
    event = event / (np.max(np.abs(event)) + 1e-12)
    event *= _fade(length, sample_rate)

    peak = 10.0 ** (rng.uniform(-26.0, -6.0) / 20.0)
    noise_rms = 10.0 ** (rng.uniform(-62.0, -45.0) / 20.0)
    audio = np.empty((n_frames, channels))
    for ch in range(channels):
        # Slightly different gain per channel, independent background noise.
        gain = peak * (1.0 if ch == 0 else rng.uniform(0.6, 1.0))
        audio[:, ch] = noise_rms * rng.standard_normal(n_frames)
        audio[onset:onset + length, ch] += gain * event
    return np.clip(audio, -1.0, 1.0), sample_rate, subtype


def _fade(length, sample_rate, fade_s=0.005):
    """Short linear fade in/out, so events do not start or end with a click."""
    env = np.ones(length)
    n = min(int(fade_s * sample_rate), length // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, endpoint=False)
        env[:n] = ramp
        env[length - n:] = ramp[::-1]
    return env


def _time(length, sample_rate):
    return np.arange(length) / sample_rate


def _gate(t, on_s, period_s, ramp_s=0.004):
    """Periodic on/off envelope: ``on_s`` seconds on every ``period_s`` seconds."""
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
    t = _time(length, sample_rate)
    low = rng.uniform(150.0, 600.0)
    high = rng.uniform(2000.0, min(6000.0, 0.4 * sample_rate))
    f0, f1 = (low, high) if upward else (high, low)
    duration = length / sample_rate
    k = np.log(f1 / f0) / duration
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _tone_burst(rng, length, sample_rate):
    t = _time(length, sample_rate)
    freq = rng.uniform(300.0, 2500.0)
    on = rng.uniform(0.05, 0.15)
    period = on + rng.uniform(0.05, 0.2)
    return _gate(t, on, period) * np.sin(2 * np.pi * freq * t)


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
    kernel_t = _time(int(0.006 * sample_rate), sample_rate)
    kernel = np.exp(-kernel_t / rng.uniform(0.0005, 0.0015)) * np.sin(
        2 * np.pi * rng.uniform(1500.0, 4000.0) * kernel_t + np.pi / 2
    )
    return np.convolve(impulses, kernel)[:length]


def _am_tone(rng, length, sample_rate):
    t = _time(length, sample_rate)
    carrier = rng.uniform(300.0, 1500.0)
    mod_rate = rng.uniform(2.0, 12.0)
    depth = rng.uniform(0.6, 1.0)
    envelope = 1.0 - depth / 2 + (depth / 2) * np.cos(2 * np.pi * mod_rate * t)
    return envelope * np.sin(2 * np.pi * carrier * t)


def _fm_tone(rng, length, sample_rate):
    t = _time(length, sample_rate)
    carrier = rng.uniform(500.0, 2000.0)
    mod_rate = rng.uniform(3.0, 10.0)
    deviation = rng.uniform(50.0, 300.0)
    vibrato = (deviation / mod_rate) * np.sin(2 * np.pi * mod_rate * t)
    return np.sin(2 * np.pi * carrier * t + vibrato)


def _harmonic_stack(rng, length, sample_rate):
    t = _time(length, sample_rate)
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
    t = _time(length, sample_rate)
    on = rng.uniform(0.08, 0.3)
    period = on + rng.uniform(0.05, 0.3)
    # Sharp attack and exponential decay inside each burst tell it apart from the
    # stationary noises.
    decay = np.exp(-np.mod(t, period) / (on / 3))
    return _gate(t, on, period, ramp_s=0.001) * decay * rng.standard_normal(length)


_EVENT_MAKERS = [
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
assert len(_EVENT_MAKERS) == len(CLASS_NAMES)


def render_clip(class_id, n_frames, sample_rate, rng, channels=1):
    """One clip of synthetic class ``class_id`` (for miniatures of other data sets).

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
    maker = _EVENT_MAKERS[class_id % len(_EVENT_MAKERS)]
    onset = int(rng.uniform(0.0, 0.2) * n_frames)
    length = max(1, n_frames - onset - int(rng.uniform(0.0, 0.1) * n_frames))
    event = maker(rng, length, sample_rate)
    event = event / (np.max(np.abs(event)) + 1e-12)
    variant = class_id // len(_EVENT_MAKERS)
    if variant:
        period = 0.5 / variant
        event = event * _gate(_time(length, sample_rate), period / 2, period)
    event = event * _fade(length, sample_rate)
    peak = 10.0 ** (rng.uniform(-20.0, -6.0) / 20.0)
    noise_rms = 10.0 ** (rng.uniform(-62.0, -48.0) / 20.0)
    audio = noise_rms * rng.standard_normal((n_frames, channels))
    audio[onset:onset + length] += peak * event[:, None]
    return np.clip(audio, -1.0, 1.0)
