"""Tiny stand-ins of the real data sets, in their real on-disk layout.

One function per data set (:func:`make_us8k`, :func:`make_esc50`, :func:`make_tau19`,
:func:`make_tau22`, :func:`make_cochl`, :func:`make_vgg`) writes a folder that the data
set's ``prepare`` reads like the real corpus, with a handful of short generated clips per
class (the sound types of :mod:`soundcl.data.sounds`, so classes are learnable).

Where the real metadata file is available (the shared data folder, see
:func:`default_shared_data_dir`), the miniature's metadata is a subset of its rows copied
verbatim, so header, delimiter, line endings and quoting are the real ones; rows the
real files do not provide (e.g. TAU 2022 training rows, of which only the test list is
shared) are generated in the same format. Without the shared folder, every row is
generated in the real format.

Each function returns the folder. A folder already holding a miniature made with the
same arguments is reused as it is (a marker file written last records the arguments),
so tests can share miniatures; a non-empty folder without the marker is refused.
"""

import csv
import io
import json
import logging
import os
import shutil

import numpy as np
import soundfile

from soundcl.base.atomic import atomic_write_text, write_json_atomic
from soundcl.data import synthetic
from soundcl.data.cochl import CLASSES as COCHL_CLASSES
from soundcl.data.sounds import render_clip

logger = logging.getLogger(__name__)

MARKER_FILE = "miniature_opts.json"
#: Bump when a miniature's content changes for the same arguments.
MINIATURE_VERSION = 1

TAU_SCENES = [
    "airport", "bus", "metro", "metro_station", "park", "public_square",
    "shopping_mall", "street_pedestrian", "street_traffic", "tram",
]
TAU_CITIES = ["barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris",
              "prague", "stockholm", "vienna"]
TAU22_DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]


def default_shared_data_dir():
    """The real-metadata folder: ``$SOUNDCL_SHARED_DATA``, else ``<repo>/../shared/data``
    (None when neither exists)."""
    candidates = [os.environ.get("SOUNDCL_SHARED_DATA")]
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    candidates.append(os.path.join(os.path.dirname(repo_root), "shared", "data"))
    for path in candidates:
        if path and os.path.isdir(path):
            return os.path.abspath(path)
    return None


# ---------------------------------------------------------------------------------------
# UrbanSound8K and ESC-50
# ---------------------------------------------------------------------------------------
def make_us8k(folder, shared_data_dir=None, clips_per_class_per_fold=1, clip_seconds=0.5, seed=0):
    """UrbanSound8K miniature: ``metadata/UrbanSound8K.csv`` + ``audio/fold{1..10}/``.

    Keeps the first ``clips_per_class_per_fold`` real rows of every (class, fold); files
    cycle through the real corpus's mix of sample rates, channel counts and bit depths.
    Without the real file, the synthetic set (same layout) is generated instead.
    """
    params = _params("us8k", locals())
    real = _real_file(shared_data_dir, "UrbanSound8K", "metadata", "UrbanSound8K.csv")
    if real is None:
        return str(synthetic.generate(folder, clips_per_class_per_fold=clips_per_class_per_fold, seed=seed))
    if _reuse(folder, params):
        return folder
    header, rows = _read_lines_csv(real)
    kept = _first_per_cell(rows, lambda r: (r[1]["classID"], r[1]["fold"]), clips_per_class_per_fold)
    formats = [(44100, 2, "PCM_16"), (48000, 1, "PCM_24"), (22050, 1, "PCM_U8"), (16000, 1, "PCM_16")]
    for i, (_, row) in enumerate(kept):
        rate, channels, subtype = formats[i % len(formats)]
        _write_clip(
            os.path.join(folder, "audio", f"fold{row['fold']}", row["slice_file_name"]),
            int(row["classID"]), (seed, i), rate, clip_seconds, channels, subtype,
        )
    atomic_write_text(os.path.join(folder, "metadata", "UrbanSound8K.csv"),
                header + "".join(line for line, _ in kept))
    return _done(folder, params)


def make_esc50(folder, shared_data_dir=None, n_classes=10, clips_per_class_per_fold=1,
               clip_seconds=0.5, seed=0):
    """ESC-50 miniature: ``ESC-50-master``-like folder with ``meta/esc50.csv`` (CRLF, real
    header) and ``audio/{filename}`` (44.1 kHz mono 16-bit).

    Keeps the classes ``target < n_classes`` and the first ``clips_per_class_per_fold``
    rows of each (target, fold).
    """
    params = _params("esc50", locals())
    if _reuse(folder, params):
        return folder
    real = _real_file(shared_data_dir, "ESC-50-master", "meta", "esc50.csv")
    if real is not None:
        header, rows = _read_lines_csv(real)
    else:
        header = "filename,fold,target,category,esc10,src_file,take\r\n"
        rows = []
        for fold in range(1, 6):
            for target in range(50):
                for take in "ABC":
                    src = 100000 + 1000 * fold + 10 * target + "ABC".index(take)
                    line = (f"{fold}-{src}-{take}-{target}.wav,{fold},{target},class_{target},"
                            f"{target < 10},{src},{take}\r\n")
                    rows.append((line, next(csv.DictReader(io.StringIO(header + line)))))
    rows = [r for r in rows if int(r[1]["target"]) < n_classes]
    kept = _first_per_cell(rows, lambda r: (r[1]["target"], r[1]["fold"]), clips_per_class_per_fold)
    for i, (_, row) in enumerate(kept):
        _write_clip(os.path.join(folder, "audio", row["filename"]), int(row["target"]),
                    (seed, i), 44100, clip_seconds, 1, "PCM_16")
    atomic_write_text(os.path.join(folder, "meta", "esc50.csv"), header + "".join(line for line, _ in kept))
    return _done(folder, params)


# ---------------------------------------------------------------------------------------
# TAU Urban Acoustic Scenes 2019 and 2022 Mobile
# ---------------------------------------------------------------------------------------
def make_tau19(folder, shared_data_dir=None, clips_per_class=2, clip_seconds=0.5, seed=0):
    """TAU Urban Acoustic Scenes 2019 development miniature.

    ``meta.csv`` and ``evaluation_setup/fold1_{train,evaluate,test}.csv`` (tab-separated,
    real header) with ``clips_per_class`` rows per scene in train and in evaluate (test
    lists the evaluate files, without label, as the real file does); audio
    ``audio/*.wav`` at 48 kHz, stereo, 24-bit like the real corpus.
    """
    params = _params("tau19", locals())
    if _reuse(folder, params):
        return folder
    root = _real_dir(shared_data_dir, "TAU-urban-acoustic-scenes-2019-development")
    if root is not None and os.path.isfile(os.path.join(root, "meta.csv")):
        meta_header, meta_rows = _read_lines_tab(os.path.join(root, "meta.csv"))
        setup = os.path.join(root, "evaluation_setup")
        train_header, train_rows = _read_lines_tab(os.path.join(setup, "fold1_train.csv"))
        eval_header, eval_rows = _read_lines_tab(os.path.join(setup, "fold1_evaluate.csv"))
        test_header, _ = _read_lines_tab(os.path.join(setup, "fold1_test.csv"))
    else:
        meta_header = "filename\tscene_label\tidentifier\tsource_label\n"
        train_header = eval_header = "filename\tscene_label\n"
        test_header = "filename\n"
        meta_rows, train_rows, eval_rows = [], [], []
        for s, scene in enumerate(TAU_SCENES):
            for j in range(2 * clips_per_class):
                city = TAU_CITIES[(s + j) % len(TAU_CITIES)]
                ident = f"{city}-{1000 + 10 * s + j}"
                name = f"audio/{scene}-{ident}-{40000 + 100 * s + j}-a.wav"
                meta_rows.append(_tab_row(meta_header, [name, scene, ident, "a"]))
                (train_rows if j < clips_per_class else eval_rows).append(
                    _tab_row(train_header, [name, scene]))
    train = _first_per_cell(train_rows, lambda r: r[1]["scene_label"], clips_per_class)
    evaluate = _first_per_cell(eval_rows, lambda r: r[1]["scene_label"], clips_per_class)
    names = {row["filename"] for _, row in train + evaluate}
    meta = [(line, row) for line, row in meta_rows if row["filename"] in names]
    scenes = sorted({row["scene_label"] for _, row in meta})
    for i, (_, row) in enumerate(meta):
        _write_clip(os.path.join(folder, *row["filename"].split("/")),
                    scenes.index(row["scene_label"]), (seed, i), 48000, clip_seconds, 2, "PCM_24")
    setup_out = os.path.join(folder, "evaluation_setup")
    atomic_write_text(os.path.join(folder, "meta.csv"), meta_header + "".join(l for l, _ in meta))
    atomic_write_text(os.path.join(setup_out, "fold1_train.csv"), train_header + "".join(l for l, _ in train))
    atomic_write_text(os.path.join(setup_out, "fold1_evaluate.csv"),
                eval_header + "".join(l for l, _ in evaluate))
    atomic_write_text(os.path.join(setup_out, "fold1_test.csv"),
                test_header + "".join(row["filename"] + "\n" for _, row in evaluate))
    return _done(folder, params)


def make_tau22(folder, shared_data_dir=None, train_clips_per_class=4, test_clips_per_class=2,
               clip_seconds=0.5, seed=0):
    """TAU Urban Acoustic Scenes 2022 Mobile development miniature.

    ``split_setup/test.csv`` keeps ``test_clips_per_class`` real rows per scene (varied
    devices); the training rows are generated in the real naming scheme
    (``audio/<scene>-<city>-<loc>-<segment>-<n>-<device>.wav``, two clips per location)
    and written to ``split_setup/split100.csv`` with nested ``split{5,10,25,50}.csv``
    (at least one clip per scene each); ``meta.csv`` lists every clip with the real
    header. Audio: 44.1 kHz mono 16-bit.
    """
    params = _params("tau22", locals())
    if _reuse(folder, params):
        return folder
    split_header = "filename\tscene_label\n"
    meta_header = "filename\tscene_label\tidentifier\tsource_label\n"
    root = _real_dir(shared_data_dir, "TAU-urban-acoustic-scenes-2022-mobile-development")
    real_test = None if root is None else os.path.join(root, "split_setup", "test.csv")
    if real_test is not None and os.path.isfile(real_test):
        split_header, test_rows = _read_lines_tab(real_test)
    else:
        test_rows = []
        for s, scene in enumerate(TAU_SCENES):
            for j, device in enumerate(TAU22_DEVICES):
                name = f"audio/{scene}-{TAU_CITIES[s]}-{100 + s}-{600 + j}-0-{device}.wav"
                test_rows.append(_tab_row(split_header, [name, scene]))
    test = []
    for scene in sorted({row["scene_label"] for _, row in test_rows}):
        devices_seen = set()
        for line, row in test_rows:
            device = row["filename"].rsplit("-", 1)[-1][:-len(".wav")]
            if row["scene_label"] == scene and device not in devices_seen:
                devices_seen.add(device)
                test.append((line, row))
                if len(devices_seen) == test_clips_per_class:
                    break
    scenes = sorted({row["scene_label"] for _, row in test})

    train = []
    for s, scene in enumerate(scenes):
        for j in range(train_clips_per_class):
            city = TAU_CITIES[(s + j // 2) % len(TAU_CITIES)]
            location = 9000 + 10 * s + j // 2
            device = TAU22_DEVICES[(s + j) % len(TAU22_DEVICES)]
            name = f"audio/{scene}-{city}-{location}-{100 + j}-{j % 10}-{device}.wav"
            train.append(_tab_row(split_header, [name, scene]))

    meta_lines = []
    for i, (_, row) in enumerate(train + test):
        stem = os.path.basename(row["filename"])[:-len(".wav")]
        _, city, location, *_, device = stem.split("-")
        meta_lines.append("\t".join([row["filename"], row["scene_label"], f"{city}-{location}", device]) + "\n")
        _write_clip(os.path.join(folder, *row["filename"].split("/")),
                    scenes.index(row["scene_label"]), (seed, i), 44100, clip_seconds, 1, "PCM_16")
    atomic_write_text(os.path.join(folder, "meta.csv"), meta_header + "".join(meta_lines))
    setup = os.path.join(folder, "split_setup")
    atomic_write_text(os.path.join(setup, "test.csv"), split_header + "".join(l for l, _ in test))
    for percent in (5, 10, 25, 50, 100):
        keep = max(1, int(np.ceil(train_clips_per_class * percent / 100)))
        subset = [(l, r) for k, (l, r) in enumerate(train) if k % train_clips_per_class < keep]
        atomic_write_text(os.path.join(setup, f"split{percent}.csv"),
                    split_header + "".join(l for l, _ in subset))
    return _done(folder, params)


# ---------------------------------------------------------------------------------------
# CochlScene and VGGSound
# ---------------------------------------------------------------------------------------
def make_cochl(folder, n_classes=13, clips_per_class=2, clip_seconds=0.5, seed=0):
    """CochlScene miniature: ``{Train,Val,Test}/<Class>/<Class>_user<NNNN>_<id>_<NNN>.wav``
    with ``clips_per_class`` clips per class and split (the first ``n_classes`` of the 13
    real classes; 44.1 kHz mono 16-bit). Users differ between splits, as in the corpus."""
    params = _params("cochl", locals())
    if _reuse(folder, params):
        return folder
    i = 0
    for split_idx, split in enumerate(("Train", "Val", "Test")):
        for class_idx, label in enumerate(COCHL_CLASSES[:n_classes]):
            for j in range(clips_per_class):
                user = 1 + 100 * split_idx + j
                name = f"{label}_user{user:04d}_{14000 + 97 * class_idx + j}_{j:03d}.wav"
                _write_clip(os.path.join(folder, split, label, name), class_idx, (seed, i),
                            44100, clip_seconds, 1, "PCM_16")
                i += 1
    return _done(folder, params)


def make_vgg(folder, shared_data_dir=None, n_classes=6, train_clips_per_class=4,
             test_clips_per_class=2, missing_per_class=0, layout="flat", extension=".wav",
             clip_seconds=0.5, seed=0):
    """VGGSound miniature: ``vggsound.csv`` (no header, ``youtube_id,start_seconds,label,
    split``, labels with commas quoted, LF) and ``audio/`` clips (16 kHz mono).

    Clips are real (youtube id, start, label) triples from the shared ``test.csv``;
    ``n_classes`` labels are chosen so that half of them contain commas (the quoting
    quirk). Per class: ``test_clips_per_class`` test rows, ``train_clips_per_class``
    train rows and ``missing_per_class`` more train rows listed without audio (as for
    YouTube videos gone offline). ``layout``: ``"flat"`` (``audio/{id}_{start:06d}.ext``)
    or ``"split_label"`` (``audio/{split}/{label}/...``); ``extension``: .wav, .flac or .ogg.
    """
    params = _params("vgg", locals())
    if layout not in ("flat", "split_label"):
        raise ValueError(f"layout must be 'flat' or 'split_label', got {layout!r}")
    if _reuse(folder, params):
        return folder
    real = _real_file(shared_data_dir, "VGGSound", "test.csv")
    clips = []  # (youtube_id, start, label)
    if real is not None:
        with open(real, encoding="utf-8", newline="") as f:
            for name, label in csv.reader(f):
                stem = os.path.splitext(name)[0]
                youtube_id, start = stem.rsplit("_", 1)
                clips.append((youtube_id, int(start), label))
    else:
        rng = np.random.default_rng(seed)
        alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
        for c in range(max(n_classes, 2) * 2):
            label = f"sound {c}, variant" if c % 2 else f"sound {c}"
            for _ in range(train_clips_per_class + test_clips_per_class + missing_per_class):
                clips.append(("".join(rng.choice(alphabet, 11)), int(rng.integers(0, 300)), label))
    labels = sorted({label for _, _, label in clips})
    with_comma = [label for label in labels if "," in label]
    without = [label for label in labels if "," not in label]
    chosen = sorted(with_comma[:n_classes // 2] + without[:n_classes - n_classes // 2])

    lines = []
    for class_idx, label in enumerate(chosen):
        of_label = [c for c in clips if c[2] == label]
        plan = (["test"] * test_clips_per_class + ["train"] * train_clips_per_class
                + ["missing"] * missing_per_class)
        if len(of_label) < len(plan):
            raise ValueError(f"only {len(of_label)} clips of {label!r} available, {len(plan)} needed")
        for j, ((youtube_id, start, _), role) in enumerate(zip(of_label, plan)):
            split = "test" if role == "test" else "train"
            lines.append([youtube_id, start, label, split])
            if role == "missing":
                continue
            stem = f"{youtube_id}_{start:06d}"
            sub = [] if layout == "flat" else [split, label]
            _write_clip(os.path.join(folder, "audio", *sub, stem + extension), class_idx,
                        (seed, class_idx, j), 16000, clip_seconds, 1, None)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    atomic_write_text(os.path.join(folder, "vggsound.csv"), buffer.getvalue())
    return _done(folder, params)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def _params(kind, arguments):
    params = {k: v for k, v in arguments.items() if k not in ("folder", "shared_data_dir")}
    if "shared_data_dir" in arguments:
        params["shared_data_dir"] = arguments["shared_data_dir"] or default_shared_data_dir()
    return {"kind": kind, "version": MINIATURE_VERSION, **params}


def _reuse(folder, params):
    """True if ``folder`` holds this miniature already; else make it empty (ours only)."""
    marker = os.path.join(folder, MARKER_FILE)
    stored = None
    if os.path.isfile(marker):
        try:
            with open(marker, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError):
            stored = {}
    if stored == {**params, "complete": True}:
        return True
    if os.path.isdir(folder) and os.listdir(folder):
        if stored is None:
            raise FileExistsError(
                f"{folder} is not empty and holds no {MARKER_FILE}: refusing to write a "
                "miniature over data that is not one; use another folder"
            )
        shutil.rmtree(folder)  # an older or unfinished miniature of ours
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(marker, {**params, "complete": False})
    return False


def _done(folder, params):
    write_json_atomic(os.path.join(folder, MARKER_FILE), {**params, "complete": True})
    logger.info("Wrote %s miniature to %s", params["kind"], folder)
    return folder


def _real_dir(shared_data_dir, name):
    shared = shared_data_dir or default_shared_data_dir()
    if shared is None or not os.path.isdir(os.path.join(shared, name)):
        return None
    return os.path.join(shared, name)


def _real_file(shared_data_dir, *parts):
    root = _real_dir(shared_data_dir, parts[0])
    path = None if root is None else os.path.join(root, *parts[1:])
    return path if path is not None and os.path.isfile(path) else None


def _read_lines_csv(path):
    """Header line and ``(raw line, parsed row)`` pairs of a comma-separated file
    (line endings kept, so a copy is byte-identical)."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.readlines()
    return lines[0], list(zip(lines[1:], csv.DictReader(lines)))


def _read_lines_tab(path):
    """Same for a tab-separated file; blank lines dropped."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = [line for line in f.readlines() if line.strip()]
    return lines[0], list(zip(lines[1:], csv.DictReader(lines, delimiter="\t")))


def _tab_row(header, values):
    line = "\t".join(values) + "\n"
    return line, dict(zip(header.rstrip("\r\n").split("\t"), values))


def _first_per_cell(rows, cell_of, per_cell):
    """The first ``per_cell`` rows of every cell, in file order."""
    counts, kept = {}, []
    for row in rows:
        cell = cell_of(row)
        if counts.get(cell, 0) < per_cell:
            counts[cell] = counts.get(cell, 0) + 1
            kept.append(row)
    return kept


def _write_clip(path, class_id, seed_parts, sample_rate, seconds, channels, subtype):
    """A generated clip of ``class_id``; format from the extension (wav/flac/ogg)."""
    rng = np.random.default_rng([*seed_parts, class_id])
    audio = render_clip(class_id, int(round(seconds * sample_rate)), sample_rate, rng, channels)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, audio, sample_rate, subtype=subtype)
