"""Your own sounds: a folder of class subfolders, or a CSV, as a class-incremental data set.

Two layouts::

    <data_folder>/<class name>/**/<clip>        one subfolder per class (nested folders allowed)
    <csv_file>: path,label[,split][,group]      paths absolute or relative to data_folder

Any format libsndfile reads (wav, flac, ogg, mp3 ...), at any rate and channel count: the
audio pipeline (:mod:`soundcl.data.audio`) decodes, downmixes and resamples. Classes are the
subfolder names (or CSV labels) in sorted order: class index ``i`` is the ``i``-th name.

Tasks: ``task_classes`` lists the classes of each task by name or index (``[[dog, cat],
[bird]]``), or :func:`task_classes_of` cuts the sorted classes into tasks of
``classes_per_task``. Splits: a CSV's ``split`` column (train / valid / test) where given;
the other clips are drawn per class, seeded: ``test_fraction`` of each class for testing,
then ``valid_fraction`` of the rest for validation, by whole recording groups (the CSV's
``group`` column; in a class folder, the subfolder a clip sits in), so that no recording
has clips on both sides. Files with other extensions (README.txt ...) and hidden files are
ignored; a class without audio, a file soundfile cannot read or a class named in
``task_classes`` that does not exist stops :func:`prepare` in one line naming it.

:func:`prepare` follows the contract of every ``prepare`` (:mod:`soundcl.data.skeleton`):
per-task manifests ``{train,valid,test}_task{k}.csv``, reused while the listing of the audio
files and the options are unchanged. ``hparams/folder/*.yaml`` compute ``n_classes`` and
``task_classes`` from the folder when the YAML is loaded (:func:`count_classes`,
:func:`task_classes_of`).
"""
import csv
import logging
import os

import numpy as np
import soundfile

from soundcl.data.marker import digest_strings, file_stamps
from soundcl.data.probe import list_files, probe_rows
from soundcl.data.skeleton import SPLITS, write_manifests_once
from soundcl.data.splits import split_train_valid, validate_task_classes

logger = logging.getLogger(__name__)

#: File name endings taken as audio: the formats libsndfile reads, plus common aliases.
AUDIO_EXTENSIONS = tuple(sorted({f".{name.lower()}" for name in soundfile.available_formats() if name != "RAW"}
                                | {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"}))
CSV_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("split", "group")


class FolderDataError(ValueError):
    """A folder or CSV that cannot be a data set; the message is one line naming the cause."""


# ----------------------------------------------------------------------------- listing
def scan(data_folder, csv_file=None):
    """The clips and classes of a folder of class subfolders, or of a CSV.

    Returns
    -------
    (entries, classes): ``entries`` dicts with ``path`` (absolute), ``label``, ``split`` ('' when
    drawn) and ``group``; ``classes`` the sorted class names.
    """
    if csv_file:
        entries = _read_csv(csv_file, data_folder)
    else:
        entries = _list_class_folders(data_folder)
    classes = sorted({e["label"] for e in entries})
    if not classes:
        raise FolderDataError(f"{csv_file or data_folder}: no class found")
    return entries, classes


def _list_class_folders(data_folder):
    if not data_folder or not os.path.isdir(data_folder):
        raise FolderDataError(f"data_folder {data_folder!r} is not a folder (expected one subfolder per class)")
    root = os.path.abspath(data_folder)
    names = sorted(n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    if not names:
        raise FolderDataError(f"{root} has no class subfolder (expected <data_folder>/<class name>/<audio files>)")
    entries = []
    for name in names:
        files = list_files(os.path.join(root, name), AUDIO_EXTENSIONS)
        if not files:
            raise FolderDataError(f"class folder {os.path.join(root, name)} holds no audio file "
                                  f"({', '.join(e[1:] for e in ('.wav', '.flac', '.ogg', '.mp3'))} ...)")
        for rel in files:
            group = os.path.dirname(rel)
            entries.append({"path": os.path.join(root, name, rel), "label": name, "split": "",
                            "group": f"{name}/{group}" if group else f"{name}/{rel}"})
    return entries


def _read_csv(csv_file, data_folder):
    if not os.path.isfile(csv_file):
        raise FolderDataError(f"csv_file {csv_file} does not exist")
    root = os.path.abspath(data_folder) if data_folder else os.path.dirname(os.path.abspath(csv_file))
    with open(csv_file, encoding="utf-8", newline="") as fin:
        reader = csv.DictReader(fin)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise FolderDataError(f"{csv_file} lacks the column {missing[0]!r}: expected the header "
                                  f"path,label[,split][,group], got {','.join(header)}")
        reader.fieldnames = header
        entries = []
        for line, row in enumerate(reader, start=2):
            path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not path or not label:
                raise FolderDataError(f"{csv_file}, line {line}: empty path or label")
            split = (row.get("split") or "").strip().lower()
            if split and split not in SPLITS:
                raise FolderDataError(f"{csv_file}, line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
            path = path if os.path.isabs(path) else os.path.join(root, path)
            group = (row.get("group") or "").strip()
            entries.append({"path": os.path.normpath(path), "label": label, "split": split,
                            "group": f"{label}/{group}" if group else f"{label}/{path}"})
    if len({e["path"] for e in entries}) != len(entries):
        raise FolderDataError(f"{csv_file} lists a file twice")
    return entries


# ------------------------------------------------------------ what the YAML computes
def count_classes(data_folder, csv_file=None):
    """Number of classes of the folder or CSV (``n_classes`` of ``hparams/folder/*.yaml``)."""
    return len(scan(data_folder, csv_file)[1])


def resolve_task_classes(task_classes, classes):
    """``task_classes`` given by class name or index -> lists of indices into ``classes`` (checked)."""
    index = {name: i for i, name in enumerate(classes)}
    resolved = []
    for task in task_classes:
        if isinstance(task, (str, int)):
            task = [task]
        row = []
        for c in task:
            if isinstance(c, str) and c in index:
                row.append(index[c])
            elif isinstance(c, str) and not c.strip().lstrip("-").isdigit():
                raise FolderDataError(f"class {c!r} of task_classes does not exist: the classes are "
                                      f"{', '.join(classes)}")
            else:
                row.append(int(c))
        resolved.append(row)
    try:
        return validate_task_classes(resolved, len(classes))
    except ValueError as err:
        raise FolderDataError(f"{err} (classes: {', '.join(f'{i}={n}' for i, n in enumerate(classes))})") from None


def task_classes_of(data_folder, csv_file=None, task_classes=None, classes_per_task=None):
    """The task split as class indices: ``task_classes`` (names or indices) resolved, or the
    sorted classes cut into tasks of ``classes_per_task`` (the last may be smaller)."""
    _, classes = scan(data_folder, csv_file)
    if task_classes is not None:
        return resolve_task_classes(task_classes, classes)
    if classes_per_task is None or int(classes_per_task) < 1:
        raise FolderDataError(f"give task_classes or classes_per_task >= 1 (got {classes_per_task!r})")
    size = int(classes_per_task)
    return [list(range(start, min(start + size, len(classes)))) for start in range(0, len(classes), size)]


# -------------------------------------------------------------------------- prepare
def prepare(data_folder, save_folder, csv_file=None, task_classes=None, classes_per_task=None,
            valid_fraction=0.15, test_fraction=0.2, seed=0, on_bad_audio="error"):
    """Write per-task train/valid/test manifests of a folder of class subfolders or of a CSV.

    Arguments
    ---------
    data_folder : str
        The folder of class subfolders; with ``csv_file``, the root of its relative paths.
    save_folder : str
    csv_file : str, optional
        ``path,label[,split][,group]`` (header required).
    task_classes : list of list of (str or int), optional
        Classes of each task by name or index; None: ``classes_per_task``.
    classes_per_task : int, optional
    valid_fraction, test_fraction : float
        Drawn per class by recording group: test first, then validation from the rest.
    seed : int
        Seed of the drawn splits.
    on_bad_audio : str
        ``error``: a file soundfile cannot read stops, named; ``skip``: left out (listed in the run's
        bad-audio report).

    Returns
    -------
    dict ``classes``, ``n_tasks``, ``task_classes``, ``manifests`` (``split -> [path per task]``).
    """
    from soundcl.data.manifest import task_manifest_paths, write_unreadable_list

    save_folder = os.path.abspath(save_folder)
    entries, classes = scan(data_folder, csv_file)
    tasks = task_classes_of(data_folder, csv_file, task_classes, classes_per_task)
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) < 1.0:
            raise FolderDataError(f"{name}={value!r} is not valid: expected a fraction in [0, 1)")
    source = os.path.abspath(csv_file) if csv_file else os.path.abspath(data_folder)
    listing = sorted(f"{e['path']}|{e['label']}|{e['split']}|{e['group']}" for e in entries)
    opts = {"source": source, "valid_fraction": float(valid_fraction), "test_fraction": float(test_fraction),
            "seed": int(seed), "on_bad_audio": on_bad_audio, "listing": digest_strings(listing),
            "files": file_stamps([e["path"] for e in entries if os.path.isfile(e["path"])])}
    result = {"classes": classes, "n_tasks": len(tasks), "task_classes": tasks,
              "manifests": task_manifest_paths(save_folder, SPLITS, len(tasks))}

    def make_rows():
        index = {name: i for i, name in enumerate(classes)}
        used = {c for task in tasks for c in task}
        root = os.path.abspath(data_folder) if data_folder else os.path.dirname(source)
        ids = clip_ids([e["path"] for e in entries], root)
        rows = [{"ID": clip_id, "duration": 0.0, "wav": e["path"], "class_idx": index[e["label"]],
                 "label": e["label"], "fold": 0, "group": e["group"], "split": e["split"]}
                for clip_id, e in zip(ids, entries) if index[e["label"]] in used]
        rows, unreadable = probe_rows(rows, "audio files", on_bad_audio, expected=f"as listed in {source}")
        write_unreadable_list(save_folder, unreadable)
        return split_rows(rows, valid_fraction, test_fraction, seed), None

    write_manifests_once("folder", save_folder, opts, tasks, make_rows, logger)
    return result


def split_rows(rows, valid_fraction, test_fraction, seed):
    """``{"train", "valid", "test"}`` rows: the CSV's split where given, else drawn by group."""
    by_split = {split: [r for r in rows if r["split"] == split] for split in SPLITS}
    free = [r for r in rows if not r["split"]]
    group_of = lambda row: row["group"]  # noqa: E731
    rest, test = split_train_valid(free, test_fraction, int(seed), group_of=group_of)
    train, valid = split_train_valid(rest, valid_fraction, int(seed) + 1, group_of=group_of)
    drawn = {"train": train, "valid": valid, "test": test}
    # The manifest's fold: 1 train, 2 valid, 3 test.
    return {split: [{**{k: v for k, v in r.items() if k not in ("group", "split")}, "fold": SPLITS.index(split) + 1}
                    for r in by_split[split] + drawn[split]] for split in SPLITS}


def clip_ids(paths, root):
    """Clip IDs: the path relative to ``root`` without extension, ``/`` -> ``__`` (unique, readable)."""
    ids, seen = [], set()
    for path in paths:
        rel = os.path.relpath(path, root) if path.startswith(root + os.sep) else path.lstrip(os.sep)
        clip_id = os.path.splitext(rel)[0].replace(os.sep, "__").replace(",", "_")
        while clip_id in seen:  # a.wav and a.flac of the same class
            clip_id += "_"
        seen.add(clip_id)
        ids.append(clip_id)
    return ids


# ------------------------------------------------------------------ example folder
def write_example_folder(folder, n_classes=4, clips_per_class=12, seconds=1.0, seed=0,
                         formats=("wav", "flac", "ogg"), first_class=0):
    """Write a folder of class subfolders of generated sounds (:mod:`soundcl.data.sounds`, types
    ``first_class ..``), in mixed formats, rates (16, 22.05, 44.1 kHz) and channel counts, to try the
    folder recipes; returns it."""
    from soundcl.data.sounds import CLASS_NAMES, render_clip

    types = range(first_class, first_class + n_classes)
    names = [CLASS_NAMES[c % len(CLASS_NAMES)] + ("" if c < len(CLASS_NAMES) else f"_{c}") for c in types]
    subtypes = {"wav": "PCM_16", "flac": "PCM_24", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
    for c, name in zip(types, names):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for n in range(clips_per_class):
            fmt = formats[(c + n) % len(formats)]
            rate = (16000, 22050, 44100)[(n // len(formats)) % 3]
            rng = np.random.default_rng([int(seed), c, n])
            audio = render_clip(c, int(round(seconds * rate)), rate, rng, channels=1 + n % 2)
            soundfile.write(os.path.join(folder, name, f"{name}_{n:03d}.{fmt}"), audio, rate, subtype=subtypes[fmt])
    return folder
