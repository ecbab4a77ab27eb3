"""Preparation of VGGSound for class-incremental learning.

VGGSound (Chen et al., 2020) lists about 200k 10-second YouTube excerpts of 309 sound
classes in ``vggsound.csv``: no header, one line ``youtube_id,start_seconds,label,split``
per clip, ``split`` being ``train`` or ``test``; labels that contain commas are quoted
(``"bird chirping, tweeting"``). YouTube ids may begin with ``-`` and contain ``_``.

Audio is not distributed: each user downloads what is still online and converts it, so
the local copy is partial. A clip is looked up as ``{youtube_id}_{start:06d}`` with
extension ``.wav``, ``.flac`` or ``.ogg`` in one of the two common layouts::

    <data_folder>/vggsound.csv
    <data_folder>/<audio_dirname>/{youtube_id}_{start:06d}.wav               (flat)
    <data_folder>/<audio_dirname>/{split}/{label}/{youtube_id}_{start:06d}.wav

Clips absent on disk are not an error: they are counted, logged and listed in
``<save_folder>/missing_clips.txt`` (same for clips soundfile cannot read). A class with
no clip at all is an error (a wrong folder is far more likely than a whole class gone);
classes with fewer than ``min_clips_per_class`` training clips on disk are dropped.
Class indices are the positions of the kept labels in sorted order.

The validation split is drawn from the training clips with a seed (stratified by class);
the test split is VGGSound's. Tasks are ``task_classes`` when given, else ``n_tasks``
groups drawn with ``task_seed``. Manifest ``fold``: 1 for VGGSound's train split (train
and valid manifests), 2 for its test split.
"""

import csv
import logging
import os

from soundcl.base.atomic import atomic_write_text
from soundcl.data.manifest import write_unreadable_list
from soundcl.data.marker import digest_strings
from soundcl.data.probe import format_file_list, list_files, probe_rows
from soundcl.data.skeleton import plan_tasks, result_without_prep, write_manifests_once
from soundcl.data.splits import split_train_valid

logger = logging.getLogger(__name__)

DATASET_NAME = "VGGSound"
METADATA_FILENAME = "vggsound.csv"
DEFAULT_AUDIO_DIRNAME = "audio"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
ORIGINAL_SPLITS = ("train", "test")
FOLD_OF_SPLIT = {"train": 1, "test": 2}
#: Tasks drawn when neither task_classes nor n_tasks is given.
DEFAULT_N_TASKS = 10
MISSING_LIST_FILE = "missing_clips.txt"
EXPECTED_LAYOUT = (
    "<data_folder>/vggsound.csv (no header: youtube_id,start_seconds,label,split) and the "
    "clips as <data_folder>/<audio_dirname>/{youtube_id}_{start:06d}.{wav,flac,ogg} or "
    "<data_folder>/<audio_dirname>/{split}/{label}/{youtube_id}_{start:06d}.{wav,flac,ogg}"
)


def prepare(data_folder, save_folder, task_classes=None, n_tasks=None, task_seed=1234,
            min_clips_per_class=1, valid_fraction=0.1, valid_seed=1234,
            audio_dirname=DEFAULT_AUDIO_DIRNAME, metadata_file=None, skip_prep=False,
            on_bad_audio="skip"):
    """Write per-task train/valid/test manifests for VGGSound.

    Arguments
    ---------
    data_folder : str
        VGGSound root (holding ``vggsound.csv`` and the audio folder).
    save_folder, task_classes, n_tasks, task_seed, skip_prep
        As for the other data sets with drawn task splits (:mod:`soundcl.data.skeleton`).
    min_clips_per_class : int
        Classes with fewer training clips on disk are dropped (logged).
    valid_fraction : float
        Part of each class's training clips held out for validation (seeded).
    valid_seed : int
        Seed of the validation split.
    audio_dirname : str
        Audio folder relative to ``data_folder`` (``"."``: the data folder itself).
    metadata_file : str, optional
        The clip list; default ``<data_folder>/vggsound.csv``.
    on_bad_audio : str
        Clips on disk that soundfile cannot read: ``"skip"`` (default; like absent
        clips, they are left out and listed) or ``"error"`` (raise, listing them).

    Returns
    -------
    dict
        ``classes`` (kept labels, sorted), ``n_tasks``, ``task_classes`` and
        ``manifests`` (``split -> [path of task 0, task 1, ...]``).

    Raises
    ------
    FileNotFoundError
        Metadata file or audio folder missing, or a class without any clip on disk.
    ValueError
        Malformed metadata, bad task split, or no class left after
        ``min_clips_per_class``.
    RuntimeError
        Unreadable clips under ``on_bad_audio="error"``.
    """
    data_folder = os.path.abspath(data_folder)
    save_folder = os.path.abspath(save_folder)
    if skip_prep:
        return result_without_prep(save_folder, DATASET_NAME)

    metadata_file = os.path.abspath(metadata_file or os.path.join(data_folder, METADATA_FILENAME))
    audio_folder = os.path.normpath(os.path.join(data_folder, audio_dirname))
    if not os.path.isfile(metadata_file):
        raise FileNotFoundError(
            f"VGGSound metadata not found: {metadata_file}. Expected {EXPECTED_LAYOUT}"
        )
    if not os.path.isdir(audio_folder):
        raise FileNotFoundError(
            f"VGGSound audio folder not found: {audio_folder}. Expected {EXPECTED_LAYOUT}"
        )

    entries, duplicates = read_metadata(metadata_file)
    all_labels = sorted({e["label"] for e in entries})
    on_disk = set(list_files(audio_folder, AUDIO_EXTENSIONS))
    missing = []
    for entry in entries:
        entry["relpath"] = _find_clip(entry, on_disk)
        if entry["relpath"] is None:
            missing.append(entry)
    found = [e for e in entries if e["relpath"] is not None]

    clips_of_label = {label: 0 for label in all_labels}
    train_clips_of_label = {label: 0 for label in all_labels}
    for entry in found:
        clips_of_label[entry["label"]] += 1
        if entry["split"] == "train":
            train_clips_of_label[entry["label"]] += 1
    absent = [label for label, count in clips_of_label.items() if count == 0]
    if absent:
        example = next(e for e in entries if e["label"] == absent[0])
        raise FileNotFoundError(
            f"VGGSound: {len(absent)} of {len(all_labels)} classes have no clip under "
            f"{audio_folder} (first listed):\n{format_file_list(absent)}\n"
            f"e.g. {_clip_stem(example)}.wav was looked for. Expected {EXPECTED_LAYOUT}"
        )
    classes = [label for label in all_labels if train_clips_of_label[label] >= min_clips_per_class]
    dropped = sorted(set(all_labels) - set(classes))
    if dropped:
        logger.warning(
            "VGGSound: dropping %d classes with fewer than %d training clips on disk: %s",
            len(dropped), min_clips_per_class, dropped,
        )
    if not classes:
        raise ValueError(
            f"VGGSound: no class has min_clips_per_class={min_clips_per_class} training clips"
        )
    result = plan_tasks(classes, task_classes, n_tasks, task_seed, DEFAULT_N_TASKS, save_folder)
    opts = {
        "data_folder": data_folder,
        "audio_folder": audio_folder,
        "min_clips_per_class": min_clips_per_class,
        "valid_fraction": valid_fraction,
        "valid_seed": valid_seed,
        # New or deleted clips change the manifests: fingerprint what was found.
        "clips_found": digest_strings(e["relpath"] for e in found),
    }

    def make_rows():
        class_idx = {label: i for i, label in enumerate(classes)}
        rows = [
            {"ID": _clip_stem(e), "duration": 0.0, "wav": os.path.join(audio_folder, e["relpath"]),
             "class_idx": class_idx[e["label"]], "label": e["label"], "fold": FOLD_OF_SPLIT[e["split"]]}
            for e in found if e["label"] in class_idx
        ]
        rows, unreadable = probe_rows(rows, "VGGSound clips", on_bad_audio)
        write_unreadable_list(save_folder, unreadable)  # for the run's bad-audio report
        train, valid = split_train_valid(
            [r for r in rows if r["fold"] == FOLD_OF_SPLIT["train"]], valid_fraction, valid_seed,
            group_of=lambda row: row["ID"].rsplit("_", 1)[0],  # the YouTube id
        )
        rows_by_split = {"train": train, "valid": valid,
                         "test": [r for r in rows if r["fold"] == FOLD_OF_SPLIT["test"]]}
        missing_list = os.path.join(save_folder, MISSING_LIST_FILE)
        _write_missing_list(missing_list, missing, unreadable)
        if missing or unreadable:
            logger.warning(
                "VGGSound: %d of %d listed clips are not on disk and %d cannot be read; they "
                "are skipped (list in %s)", len(missing), len(entries), len(unreadable), missing_list,
            )
        if duplicates:
            logger.warning("VGGSound: %d duplicate lines of %s ignored", duplicates, metadata_file)
        for label in classes:
            if not any(r["label"] == label for r in rows_by_split["test"]):
                logger.warning("VGGSound: class %r has no test clip on disk", label)
        info = {"dropped_classes": dropped, "n_missing": len(missing), "n_unreadable": len(unreadable)}
        return rows_by_split, info

    write_manifests_once(DATASET_NAME, save_folder, opts, result["task_classes"], make_rows, logger,
                         metadata_file=metadata_file, classes=classes)
    return result


def read_metadata(metadata_file):
    """Parse ``vggsound.csv``.

    Blank lines are skipped, as is a first line whose ``start_seconds`` is not a number
    (a header added by hand; the official file has none). A clip listed twice with the
    same label and split is kept once.

    Returns
    -------
    entries : list of dict
        ``youtube_id``, ``start`` (int seconds), ``label``, ``split`` per clip, in
        file order.
    duplicates : int
        Number of repeated lines dropped.

    Raises
    ------
    ValueError
        A line without 4 fields, a non-integer start, an unknown split, or one clip
        listed with two labels or splits.
    """
    entries, seen, duplicates = [], {}, 0
    with open(metadata_file, encoding="utf-8-sig", newline="") as f:
        for line_no, fields in enumerate(csv.reader(f), start=1):
            fields = [field.strip() for field in fields]
            if not any(fields):
                continue
            if len(fields) != 4:
                raise ValueError(
                    f"{metadata_file}, line {line_no}: expected 4 fields "
                    f"youtube_id,start_seconds,label,split (labels with commas quoted), got "
                    f"{len(fields)}: {fields}"
                )
            youtube_id, start, label, split = fields
            start_value = _as_start(start)
            if start_value is None:
                if not entries and line_no == 1:
                    logger.info("VGGSound: skipping header line %s of %s", fields, metadata_file)
                    continue
                raise ValueError(
                    f"{metadata_file}, line {line_no}: start_seconds must be a whole number "
                    f"of seconds, got {start!r}"
                )
            if split not in ORIGINAL_SPLITS:
                raise ValueError(
                    f"{metadata_file}, line {line_no}: split must be one of "
                    f"{ORIGINAL_SPLITS}, got {split!r}"
                )
            if not youtube_id or not label:
                raise ValueError(f"{metadata_file}, line {line_no}: empty youtube_id or label")
            key = (youtube_id, start_value)
            if key in seen:
                first = seen[key]
                if (first["label"], first["split"]) != (label, split):
                    raise ValueError(
                        f"{metadata_file}, line {line_no}: clip {youtube_id} at {start_value} s "
                        f"is listed as ({label!r}, {split}) and before as "
                        f"({first['label']!r}, {first['split']})"
                    )
                duplicates += 1
                continue
            entry = {"youtube_id": youtube_id, "start": start_value, "label": label, "split": split}
            seen[key] = entry
            entries.append(entry)
    if not entries:
        raise ValueError(f"{metadata_file} lists no clip. Expected {EXPECTED_LAYOUT}")
    return entries, duplicates


def clip_stem(youtube_id, start):
    """File name stem of a clip: ``{youtube_id}_{start:06d}``."""
    return f"{youtube_id}_{int(start):06d}"


def _clip_stem(entry):
    return clip_stem(entry["youtube_id"], entry["start"])


def _as_start(text):
    """``start_seconds`` as int (``"30"`` or ``"30.0"``), or None if not whole seconds."""
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value or value < 0 or value != int(value):
        return None
    return int(value)


def _find_clip(entry, on_disk):
    """Relative path of the clip's audio in ``on_disk`` (flat layout first), or None."""
    stem = _clip_stem(entry)
    for folder in ("", f"{entry['split']}/{entry['label']}/"):
        for extension in AUDIO_EXTENSIONS:
            relpath = f"{folder}{stem}{extension}"
            if relpath in on_disk:
                return relpath
    return None


def _write_missing_list(path, missing, unreadable):
    """One line per skipped clip: ``youtube_id,start,label,split`` (CSV) or, for
    unreadable files, ``# unreadable: path (reason)``."""

    def _write(f):
        writer = csv.writer(f, lineterminator="\n")
        for entry in missing:
            writer.writerow([entry["youtube_id"], entry["start"], entry["label"], entry["split"]])
        for text in unreadable:
            f.write(f"# unreadable: {text}\n")

    atomic_write_text(path, _write)
