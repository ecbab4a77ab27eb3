"""Preparation of TAU Urban Acoustic Scenes 2019 (development) for class-incremental learning.

10 acoustic scenes, 14400 clips of 10 s, 48 kHz stereo (DCASE 2019 task 1A). Layout::

    <data_folder>/meta.csv                                 filename  scene_label  identifier  source_label
    <data_folder>/evaluation_setup/fold1_train.csv         filename  scene_label
    <data_folder>/evaluation_setup/fold1_evaluate.csv      filename  scene_label
    <data_folder>/audio/<scene>-<city>-<location>-<segment>-a.wav

Files are tab-separated; ``filename`` is relative to ``data_folder``. The official
fold-1 split is used: ``fold1_evaluate`` is the test set, and the validation set is
drawn from ``fold1_train`` per scene by whole recording locations (``identifier``,
e.g. ``lisbon-1000``), so no location is in both. Class indices follow the sorted
scene labels; the default protocol has 5 tasks of 2 scenes.
"""
import csv
import logging
import os

from soundcl.data.manifest import task_manifest_paths
from soundcl.data.probe import probe_rows
from soundcl.data.skeleton import SPLITS, with_domains, write_manifests_once
from soundcl.data.splits import split_train_valid, validate_task_classes

logger = logging.getLogger(__name__)

DEFAULT_TASK_CLASSES = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
META_FILE = "meta.csv"
TRAIN_FILE = os.path.join("evaluation_setup", "fold1_train.csv")
EVALUATE_FILE = os.path.join("evaluation_setup", "fold1_evaluate.csv")
#: The validation clips (``valid_split``): held out of fold1_train by location, or the test clips (cssl_sound).
VALID_SPLITS = ("location", "test")


def _read_tsv(path, columns):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"TAU 2019 file not found: {path}. Expected <data_folder>/meta.csv, "
            "<data_folder>/evaluation_setup/fold1_{train,evaluate}.csv and <data_folder>/audio/"
        )
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing} (tab-separated header expected: {header})")
        reader.fieldnames = header
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def read_metadata(data_folder):
    """Read the fold-1 split.

    Returns
    -------
    (train entries, evaluate entries, classes) where entries have ``filename``,
    ``scene_label`` and ``identifier`` (from meta.csv), classes the sorted scenes.
    """
    meta = _read_tsv(os.path.join(data_folder, META_FILE), ["filename", "scene_label", "identifier"])
    identifier = {row["filename"]: row["identifier"] for row in meta}
    scene = {row["filename"]: row["scene_label"] for row in meta}
    classes = sorted(set(scene.values()))
    splits = []
    for relpath in (TRAIN_FILE, EVALUATE_FILE):
        path = os.path.join(data_folder, relpath)
        entries = _read_tsv(path, ["filename", "scene_label"])
        for entry in entries:
            if entry["filename"] not in identifier:
                raise ValueError(f"{path}: {entry['filename']} is not in {META_FILE}")
            if entry["scene_label"] != scene[entry["filename"]]:
                raise ValueError(f"{path}: {entry['filename']} is {entry['scene_label']} here but "
                                 f"{scene[entry['filename']]} in {META_FILE}")
            entry["identifier"] = identifier[entry["filename"]]
        splits.append(entries)
    overlap = {e["filename"] for e in splits[0]} & {e["filename"] for e in splits[1]}
    if overlap:
        raise ValueError(f"{len(overlap)} files are in both {TRAIN_FILE} and {EVALUATE_FILE}, e.g. {sorted(overlap)[0]}")
    return splits[0], splits[1], classes


def prepare(data_folder, save_folder, task_classes=DEFAULT_TASK_CLASSES, valid_fraction=0.1, seed=0,
            valid_split="location", task_domains=None):
    """Write per-task train/valid/test manifests for TAU 2019 fold 1.

    Arguments
    ---------
    data_folder : str
    save_folder : str
    task_classes : list of list of int
        Scene indices (sorted scene labels) of each task.
    valid_fraction : float
        Fraction of each scene's training clips drawn (by location) for valid.
    seed : int
    valid_split : str
        ``location``: that held-out part of ``fold1_train`` validates; ``test`` (cssl_sound's):
        all of ``fold1_train`` trains and the test clips (``fold1_test.csv`` = the
        ``fold1_evaluate`` clips) validate, so the model selection sees the test set.
    task_domains : list of list of str, optional
        Domain-incremental learning (:mod:`soundcl.data.domains`): cities are the domains (the
        ``<city>`` of ``<scene>-<city>-<location>-<segment>-a.wav``); task ``k`` holds the clips of
        every class of ``task_classes`` recorded in ``task_domains[k]``; a ``domain`` column.

    Returns
    -------
    dict ``classes``, ``n_tasks``, ``manifests`` (``split -> [path per task]``).
    """
    data_folder, save_folder = os.path.abspath(data_folder), os.path.abspath(save_folder)
    train_entries, test_entries, classes = read_metadata(data_folder)
    task_classes = validate_task_classes(task_classes, len(classes))
    manifests = task_manifest_paths(save_folder, SPLITS, len(task_classes))
    result = with_domains({"classes": classes, "n_tasks": len(task_classes), "manifests": manifests},
                          task_domains, save_folder)
    if valid_split not in VALID_SPLITS:
        raise ValueError(f"unknown valid_split {valid_split!r}: expected one of {', '.join(VALID_SPLITS)}")
    opts = {"data_folder": data_folder, "valid_fraction": valid_fraction, "seed": seed}
    if valid_split != "location":  # (manifests prepared before the option stay valid)
        opts["valid_split"] = valid_split
    metadata_file = os.path.join(data_folder, TRAIN_FILE)

    def make_rows():
        index = {name: i for i, name in enumerate(classes)}
        used = {c for task in task_classes for c in task}
        location = {}

        def rows_of(entries):
            rows = []
            for e in entries:
                if index[e["scene_label"]] in used:
                    wav = os.path.join(data_folder, e["filename"])
                    location[wav] = e["identifier"]
                    rows.append({"ID": os.path.splitext(os.path.basename(e["filename"]))[0], "duration": 0.0,
                                 "wav": wav, "class_idx": index[e["scene_label"]], "label": e["scene_label"],
                                 "fold": 1})
                    if task_domains is not None:
                        rows[-1]["domain"] = os.path.basename(e["filename"]).split("-")[1]  # the city
            return rows

        pool, test = rows_of(train_entries), rows_of(test_entries)
        probe_rows(pool + test, "TAU 2019 audio files", expected=f"under {data_folder}/audio/")
        if valid_split == "test":
            return {"train": pool, "valid": [dict(row) for row in test], "test": test}, None
        train, valid = split_train_valid(pool, valid_fraction, seed, group_of=lambda row: location[row["wav"]])
        return {"train": train, "valid": valid, "test": test}, None

    write_manifests_once("TAU-urban-acoustic-scenes-2019", save_folder, opts, task_classes, make_rows, logger,
                         metadata_file=metadata_file, task_domains=result.get("task_domains"),
                         extra_fields=[] if task_domains is None else ["domain"])
    return result
