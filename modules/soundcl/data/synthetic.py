"""Embedded synthetic sound-class data set in the UrbanSound8K layout.

It lets the recipes and tests run end to end without downloading anything: the data is
written exactly like UrbanSound8K (``metadata/UrbanSound8K.csv`` with the real header,
``audio/fold{f}/{fsID}-{classID}-0-{n}.wav``), so it goes through
:func:`soundcl.data.us8k.prepare` like the real corpus.

Ten classes of clearly different synthetic sounds (:mod:`soundcl.data.sounds`). Each clip
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
from soundcl.data.sounds import CLASS_NAMES, EVENT_MAKERS, fade
from soundcl.base.atomic import atomic_write_text, write_json_atomic

logger = logging.getLogger(__name__)

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
    on_bad_audio="error",
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
        on_bad_audio=on_bad_audio,
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
    event = EVENT_MAKERS[clip["classID"]](rng, length, sample_rate)
    event = event / (np.max(np.abs(event)) + 1e-12)
    event *= fade(length, sample_rate)

    peak = 10.0 ** (rng.uniform(-26.0, -6.0) / 20.0)
    noise_rms = 10.0 ** (rng.uniform(-62.0, -45.0) / 20.0)
    audio = np.empty((n_frames, channels))
    for ch in range(channels):
        # Slightly different gain per channel, independent background noise.
        gain = peak * (1.0 if ch == 0 else rng.uniform(0.6, 1.0))
        audio[:, ch] = noise_rms * rng.standard_normal(n_frames)
        audio[onset:onset + length, ch] += gain * event
    return np.clip(audio, -1.0, 1.0), sample_rate, subtype
