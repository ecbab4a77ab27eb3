"""Preparation of ESC-50 for class-incremental learning.

ESC-50 (Piczak, 2015): 2000 clips of 5 s at 44.1 kHz, 50 classes, 5 folds of 400
(clips cut from one Freesound recording, ``src_file``, share a fold). Layout::

    <data_folder>/meta/esc50.csv     filename,fold,target,category,esc10,src_file,take
    <data_folder>/audio/<filename>

Protocol of the on-device replay recipe: 5 tasks of 10 classes; one fold
(``test_fold``) is the test set, and the whole run is repeated with each fold as
test fold (``recipes/replay_train.py --cross_validate=True``). The validation set
is drawn from the four other folds, per class, by whole ``src_file`` groups.
"""
import csv
import logging
import os

from soundcl.data.manifest import task_manifest_paths
from soundcl.data.probe import probe_rows
from soundcl.data.skeleton import SPLITS, write_manifests_once
from soundcl.data.splits import split_train_valid, validate_task_classes

logger = logging.getLogger(__name__)

N_CLASSES = 50
FOLDS = (1, 2, 3, 4, 5)
DEFAULT_TASK_CLASSES = [list(range(10 * t, 10 * (t + 1))) for t in range(5)]
METADATA_RELPATH = os.path.join("meta", "esc50.csv")
METADATA_COLUMNS = ["filename", "fold", "target", "category", "src_file"]


def read_metadata(metadata_file):
    """Parse ``esc50.csv`` -> (entries with int ``fold``/``target``, class names by target)."""
    if not os.path.isfile(metadata_file):
        raise FileNotFoundError(
            f"ESC-50 metadata not found: {metadata_file}. Expected <data_folder>/meta/esc50.csv "
            "and <data_folder>/audio/"
        )
    with open(metadata_file, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [c for c in METADATA_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{metadata_file} lacks the columns {missing}; expected at least {METADATA_COLUMNS}")
        reader.fieldnames = header
        entries = []
        for line_no, row in enumerate(reader, start=2):
            try:
                row["fold"], row["target"] = int(row["fold"]), int(row["target"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{metadata_file}, line {line_no}: fold and target must be integers, "
                    f"got fold={row.get('fold')!r}, target={row.get('target')!r}"
                ) from None
            if row["fold"] not in FOLDS:
                raise ValueError(f"{metadata_file}, line {line_no}: fold {row['fold']} is not in 1..5")
            row["filename"], row["category"] = row["filename"].strip(), row["category"].strip()
            entries.append(row)
    names = {}
    for entry in entries:
        if names.setdefault(entry["target"], entry["category"]) != entry["category"]:
            raise ValueError(f"{metadata_file}: target {entry['target']} has two categories")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{metadata_file}: targets must be 0..n-1 without gaps, got {sorted(names)}")
    if len({e["filename"] for e in entries}) != len(entries):
        raise ValueError(f"{metadata_file}: duplicate file names")
    return entries, [names[i] for i in range(len(names))]


def prepare(data_folder, save_folder, task_classes=DEFAULT_TASK_CLASSES, test_fold=1, valid_fraction=0.1, seed=0):
    """Write per-task train/valid/test manifests for one ESC-50 test fold.

    Arguments
    ---------
    data_folder : str
        ESC-50 root (``meta/esc50.csv``, ``audio/``).
    save_folder : str
    task_classes : list of list of int
        Targets of each task (default: 5 tasks of 10 in target order).
    test_fold : int
        The fold (1..5) used as test set; the others give train and valid.
    valid_fraction : float
        Fraction of each class's non-test clips drawn (by ``src_file``) for valid.
    seed : int
        Seed of that draw.

    Returns
    -------
    dict ``classes``, ``n_tasks``, ``manifests`` (``split -> [path per task]``).
    """
    data_folder, save_folder = os.path.abspath(data_folder), os.path.abspath(save_folder)
    if test_fold not in FOLDS:
        raise ValueError(f"test_fold must be one of {FOLDS}, got {test_fold!r}")
    metadata_file = os.path.join(data_folder, METADATA_RELPATH)
    entries, classes = read_metadata(metadata_file)
    task_classes = validate_task_classes(task_classes, len(classes))
    manifests = task_manifest_paths(save_folder, SPLITS, len(task_classes))
    result = {"classes": classes, "n_tasks": len(task_classes), "manifests": manifests}
    opts = {"data_folder": data_folder, "test_fold": test_fold, "valid_fraction": valid_fraction, "seed": seed}

    def make_rows():
        used_classes = {c for task in task_classes for c in task}
        rows = [{"ID": os.path.splitext(e["filename"])[0], "duration": 0.0,
                 "wav": os.path.join(data_folder, "audio", e["filename"]), "class_idx": e["target"],
                 "label": e["category"], "fold": e["fold"]}
                for e in entries if e["target"] in used_classes]
        rows, _ = probe_rows(rows, "ESC-50 audio files", expected=f"under {data_folder}/audio/")
        src_file = {e["filename"]: e["src_file"] for e in entries}
        train, valid = split_train_valid(
            [r for r in rows if r["fold"] != test_fold], valid_fraction, seed,
            group_of=lambda row: src_file[os.path.basename(row["wav"])],
        )
        return {"train": train, "valid": valid, "test": [r for r in rows if r["fold"] == test_fold]}, None

    write_manifests_once("ESC-50", save_folder, opts, task_classes, make_rows,
                         logger, metadata_file=metadata_file)
    return result
