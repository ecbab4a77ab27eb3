"""Preparation of UrbanSound8K for class-incremental learning.

UrbanSound8K (Salamon et al., 2014) has 8732 labelled clips (up to 4 s) of 10 urban
sound classes, pre-split into 10 folds. Its layout is::

    <data_folder>/metadata/UrbanSound8K.csv
    <data_folder>/audio/fold1/ ... <data_folder>/audio/fold10/

The metadata header is ``slice_file_name,fsID,start,end,salience,fold,classID,class``.
Clips from one Freesound recording (``fsID``) all sit in the same fold, so the split has
to follow the folds (a random split would leak recordings between train and test).

:func:`prepare` writes one manifest per (split, task) into ``save_folder``; see
:mod:`soundcl.data.manifest` for the format. Class indices are UrbanSound8K's ``classID``.
"""

import csv
import logging
import operator
import os

from soundcl.data.manifest import read_manifest, task_manifest_paths, write_unreadable_list
from soundcl.data.probe import probe_rows
from soundcl.data.skeleton import SPLITS, write_manifests_once
from soundcl.data.splits import validate_task_classes

logger = logging.getLogger(__name__)

#: Five tasks of two classes each (classIDs). The order mixes classes that are easy to
#: confuse (e.g. drilling and jackhammer) across tasks.
DEFAULT_TASK_CLASSES = [[3, 8], [9, 4], [1, 7], [5, 2], [6, 0]]
DEFAULT_TRAIN_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)
DEFAULT_VALID_FOLDS = (9,)
DEFAULT_TEST_FOLDS = (10,)

N_FOLDS = 10
METADATA_RELPATH = os.path.join("metadata", "UrbanSound8K.csv")
AUDIO_DIRNAME = "audio"
METADATA_COLUMNS = [
    "slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"
]
EXPECTED_LAYOUT = "<data_folder>/metadata/UrbanSound8K.csv and <data_folder>/audio/fold1..10/"


def prepare(
    data_folder,
    save_folder,
    task_classes=DEFAULT_TASK_CLASSES,
    train_folds=DEFAULT_TRAIN_FOLDS,
    valid_folds=DEFAULT_VALID_FOLDS,
    test_folds=DEFAULT_TEST_FOLDS,
    skip_prep=False,
    on_bad_audio="error",
):
    """Write per-task train/valid/test manifests for UrbanSound8K.

    Arguments
    ---------
    data_folder : str
        UrbanSound8K root (holding ``metadata/`` and ``audio/``).
    save_folder : str
        Where ``{train,valid,test}_task{k}.csv`` and ``prepare_opts.json`` go.
    task_classes : list of list of int
        ``task_classes[k]`` = classIDs introduced in task ``k`` (disjoint).
    train_folds, valid_folds, test_folds : sequence of int
        Disjoint, non-empty sets of folds in 1..10. Folds in none of them are unused.
    skip_prep : bool
        If True, write nothing and check no audio; only return the (expected) manifest
        paths and class names.

    Returns
    -------
    dict
        ``classes`` (class names in classID order), ``n_tasks`` and ``manifests``
        (``split -> [path of task 0, task 1, ...]``).

    Raises
    ------
    FileNotFoundError
        Metadata file, audio folder or audio files missing.
    ValueError
        Bad folds, bad task_classes or malformed metadata.
    RuntimeError
        Audio files that soundfile cannot read.
    """
    data_folder = os.path.abspath(data_folder)
    save_folder = os.path.abspath(save_folder)
    folds_by_split = _validate_folds(train_folds, valid_folds, test_folds)
    metadata_file = os.path.join(data_folder, METADATA_RELPATH)
    audio_folder = os.path.join(data_folder, AUDIO_DIRNAME)

    if skip_prep:
        return _result_without_prep(metadata_file, save_folder, task_classes)

    if not os.path.isfile(metadata_file):
        raise FileNotFoundError(
            f"UrbanSound8K metadata not found: {metadata_file}. Expected the layout "
            f"{EXPECTED_LAYOUT}"
        )
    if not os.path.isdir(audio_folder):
        raise FileNotFoundError(
            f"UrbanSound8K audio folder not found: {audio_folder}. Expected the layout "
            f"{EXPECTED_LAYOUT}"
        )

    entries, classes = read_metadata(metadata_file)
    task_classes = validate_task_classes(task_classes, len(classes))
    manifests = task_manifest_paths(save_folder, SPLITS, len(task_classes))
    result = {"classes": classes, "n_tasks": len(task_classes), "manifests": manifests}

    opts = {"data_folder": data_folder, "folds": folds_by_split}

    def make_rows():
        # Only rows that end up in some manifest need their audio.
        used_classes = {c for classes_of_task in task_classes for c in classes_of_task}
        split_of_fold = {fold: split for split, folds in folds_by_split.items() for fold in folds}
        rows = [
            {"ID": os.path.splitext(e["slice_file_name"])[0], "duration": 0.0,
             "wav": os.path.join(audio_folder, f"fold{e['fold']}", e["slice_file_name"]),
             "class_idx": e["classID"], "label": e["class"], "fold": e["fold"]}
            for e in entries if e["fold"] in split_of_fold and e["classID"] in used_classes
        ]
        rows, unreadable = probe_rows(rows, "UrbanSound8K audio files", on_bad_audio,
                                      expected=f"under {audio_folder}/fold<fold>/")
        write_unreadable_list(save_folder, unreadable)
        rows_by_split = {split: [r for r in rows if split_of_fold[r["fold"]] == split] for split in SPLITS}
        for split, folds in folds_by_split.items():
            if not rows_by_split[split]:
                logger.warning("UrbanSound8K: no clips in %s folds %s", split, folds)
        return rows_by_split, None

    write_manifests_once("UrbanSound8K", save_folder, opts, task_classes, make_rows, logger,
                         metadata_file=metadata_file)
    return result


def read_metadata(metadata_file):
    """Parse ``UrbanSound8K.csv``.

    Returns
    -------
    entries : list of dict
        One per row, with the metadata columns (``fold`` and ``classID`` as int).
    classes : list of str
        Class names indexed by classID.

    Raises
    ------
    ValueError
        Missing columns, non-integer fold/classID, duplicate file names, a classID with
        two names, or classIDs that are not 0..n-1.
    """
    with open(metadata_file, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing_columns = [c for c in METADATA_COLUMNS if c not in header]
        if missing_columns:
            raise ValueError(
                f"{metadata_file} lacks the columns {missing_columns}; expected the header "
                f"{','.join(METADATA_COLUMNS)}"
            )
        reader.fieldnames = header
        entries = []
        for line_no, row in enumerate(reader, start=2):
            try:
                row["fold"] = int(row["fold"])
                row["classID"] = int(row["classID"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{metadata_file}, line {line_no}: fold and classID must be integers, "
                    f"got fold={row.get('fold')!r}, classID={row.get('classID')!r}"
                ) from None
            row["slice_file_name"] = row["slice_file_name"].strip()
            row["class"] = row["class"].strip()
            entries.append(row)

    seen = set()
    for entry in entries:
        if entry["slice_file_name"] in seen:
            raise ValueError(f"{metadata_file}: duplicate file {entry['slice_file_name']}")
        seen.add(entry["slice_file_name"])

    names = {}
    for entry in entries:
        name = names.setdefault(entry["classID"], entry["class"])
        if name != entry["class"]:
            raise ValueError(
                f"{metadata_file}: classID {entry['classID']} has two names, "
                f"{name!r} and {entry['class']!r}"
            )
    if sorted(names) != list(range(len(names))):
        raise ValueError(
            f"{metadata_file}: classIDs must be 0..n-1 without gaps, got {sorted(names)}"
        )
    classes = [names[i] for i in range(len(names))]
    return entries, classes


def _validate_folds(train_folds, valid_folds, test_folds):
    """Check the fold selection; return ``split -> sorted list of folds``."""
    folds_by_split = {}
    for split, folds in zip(SPLITS, (train_folds, valid_folds, test_folds)):
        if isinstance(folds, int):  # a lone fold given as int instead of a list
            folds = [folds]
        folds = list(folds)
        if not folds:
            raise ValueError(f"{split}_folds is empty")
        bad = [f for f in folds if _as_fold(f) is None or not 1 <= _as_fold(f) <= N_FOLDS]
        if bad:
            raise ValueError(f"{split}_folds has invalid folds {bad}: folds are 1..{N_FOLDS}")
        folds = [_as_fold(f) for f in folds]
        if len(set(folds)) != len(folds):
            raise ValueError(f"{split}_folds lists a fold twice: {folds}")
        folds_by_split[split] = sorted(folds)

    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            shared = sorted(set(folds_by_split[first]) & set(folds_by_split[second]))
            if shared:
                raise ValueError(
                    f"folds {shared} are in both {first}_folds and {second}_folds: "
                    "the splits must be disjoint"
                )
    return folds_by_split


def _as_fold(value):
    """``value`` as a plain int (numpy ints included), or None if it is not one."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _result_without_prep(metadata_file, save_folder, task_classes):
    """Return value of :func:`prepare` for ``skip_prep=True``.

    Class names come from the metadata file when it is there (cheap: no audio is
    touched), else from the existing manifests.
    """
    task_classes = [list(c) for c in task_classes]
    manifests = task_manifest_paths(save_folder, SPLITS, len(task_classes))
    if os.path.isfile(metadata_file):
        _, classes = read_metadata(metadata_file)
        task_classes = validate_task_classes(task_classes, len(classes))
    else:
        names = {}
        for path in (p for paths in manifests.values() for p in paths):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"skip_prep=True but neither {metadata_file} nor the manifest {path} "
                    "exists"
                )
            for row in read_manifest(path):
                names[row["class_idx"]] = row["label"]
        n_classes = max(names) + 1 if names else 0
        # Classes in no task never reach a manifest; their names are unknown here.
        classes = [names.get(i, f"class_{i}") for i in range(n_classes)]
    logger.info("UrbanSound8K: skip_prep=True, using manifests in %s as they are", save_folder)
    return {"classes": classes, "n_tasks": len(task_classes), "manifests": manifests}
