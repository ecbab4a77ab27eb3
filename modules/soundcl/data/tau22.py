"""Preparation of TAU Urban Acoustic Scenes 2022 Mobile for class-incremental learning.

The development set of DCASE 2022-2024 task 1 has 230k one-second, 44.1 kHz mono clips of
10 acoustic scenes, recorded in 12 cities with devices ``a``, ``b``, ``c`` and simulated
devices ``s1`` .. ``s6``. Its layout::

    <data_folder>/meta.csv                      filename  scene_label  identifier  source_label
    <data_folder>/audio/<scene>-<city>-<loc>-<segment>-<n>-<device>.wav
    <data_folder>/split_setup/split{5,10,25,50,100}.csv   filename  scene_label
    <data_folder>/split_setup/test.csv                    filename  scene_label

All metadata files are tab-separated with a header; ``filename`` is relative to
``data_folder`` (``audio/...``). The ``split{N}.csv`` files are the DCASE 2024 training
subsets (N % of the training set, nested); ``subset`` picks one. When ``split_setup`` is
absent, the DCASE 2022 files ``evaluation_setup/fold1_train.csv`` (= subset 100) and
``fold1_evaluate.csv`` (test) are used.

The validation split is drawn from the training subset with a seed, stratified by scene
and grouped by recording location (``identifier``, ``<city>-<loc>``): clips of one
location (recorded at once by several devices) never straddle train and valid. The
device (last ``-`` field of the file name) is kept in the manifests' ``device`` column
for device-wise accuracy tables. Class indices follow the scene labels of ``meta.csv`` in
sorted order. Manifest ``fold``: 1 for training-subset clips (train and valid), 2 for
test clips.
"""

import csv
import logging
import os

from soundcl.data.manifest import write_unreadable_list
from soundcl.data.marker import file_stamps
from soundcl.data.probe import probe_rows
from soundcl.data.skeleton import plan_tasks, result_without_prep, with_domains, write_manifests_once
from soundcl.data.splits import split_train_valid

logger = logging.getLogger(__name__)

DATASET_NAME = "TAU Urban Acoustic Scenes 2022 Mobile"
METADATA_FILENAME = "meta.csv"
META_COLUMNS = ["filename", "scene_label", "identifier", "source_label"]
SPLIT_COLUMNS = ["filename", "scene_label"]
SUBSETS = (5, 10, 25, 50, 100)
SPLIT_SETUP_DIR = "split_setup"
EVALUATION_SETUP_DIR = "evaluation_setup"
FOLD_OF_SPLIT = {"train": 1, "test": 2}
EXTRA_FIELDS = ["device"]
#: What a domain of ``task_domains`` is (domain-incremental learning).
DOMAIN_COLUMNS = ("device", "city")
DEFAULT_N_TASKS = 5
EXPECTED_LAYOUT = (
    "<data_folder>/meta.csv, <data_folder>/audio/*.wav and the split files "
    "<data_folder>/split_setup/split{5,10,25,50,100}.csv + split_setup/test.csv (or "
    "evaluation_setup/fold1_train.csv + fold1_evaluate.csv), all tab-separated with a header"
)


def prepare(data_folder, save_folder, task_classes=None, n_tasks=None, task_seed=1234, subset=100,
            valid_fraction=0.1, valid_seed=1234, skip_prep=False, on_bad_audio="error", task_domains=None,
            domain_column="device"):
    """Write per-task train/valid/test manifests for TAU Urban Acoustic Scenes 2022 Mobile.

    Arguments
    ---------
    data_folder : str
        Root of the development set (holding ``meta.csv``, ``audio/`` and the splits).
    save_folder, task_classes, n_tasks, task_seed, skip_prep
        As for the other data sets with drawn task splits (:mod:`soundcl.data.skeleton`).
    subset : int
        Training subset in percent: 5, 10, 25, 50 or 100 (``split_setup/split{subset}.csv``).
    valid_fraction : float
        Part of each scene's training clips (whole locations) held out for validation.
    valid_seed : int
        Seed of the validation split.
    task_domains : list of list of str, optional
        Domain-incremental learning (:mod:`soundcl.data.domains`): task ``k`` holds the clips
        (of every class of ``task_classes``) whose domain is in ``task_domains[k]``, e.g.
        ``[[a], [b, c], [s1, s2, s3]]``; the manifests get a ``domain`` column.
    domain_column : str
        What a domain is: ``device`` (``a``, ``b``, ``c``, ``s1`` .. ``s6``) or ``city``.

    Returns
    -------
    dict
        ``classes``, ``n_tasks``, ``task_classes`` and ``manifests``
        (``split -> [path of task 0, task 1, ...]``). Manifests have the extra column
        ``device``.

    Raises
    ------
    FileNotFoundError
        Metadata, split file or audio files missing.
    ValueError
        Bad ``subset``, malformed metadata, or split rows that disagree with meta.csv.
    RuntimeError
        Audio files that soundfile cannot read.
    """
    data_folder = os.path.abspath(data_folder)
    save_folder = os.path.abspath(save_folder)
    if isinstance(subset, bool) or subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS} (percent of the training set), got {subset!r}")
    if domain_column not in DOMAIN_COLUMNS:
        raise ValueError(f"domain_column must be one of {DOMAIN_COLUMNS}, got {domain_column!r}")
    if skip_prep:
        return result_without_prep(save_folder, DATASET_NAME)

    metadata_file = os.path.join(data_folder, METADATA_FILENAME)
    if not os.path.isfile(metadata_file):
        raise FileNotFoundError(
            f"TAU 2022 Mobile metadata not found: {metadata_file}. Expected {EXPECTED_LAYOUT}"
        )
    train_file, test_file = split_files(data_folder, subset)

    meta = {row["filename"]: row for row in read_tab_file(metadata_file, META_COLUMNS)}
    classes = sorted({row["scene_label"] for row in meta.values()})
    entries_by_original = {}
    for split, path in (("train", train_file), ("test", test_file)):
        entries = read_tab_file(path, SPLIT_COLUMNS)
        for entry in entries:
            known = meta.get(entry["filename"])
            if known is None:
                raise ValueError(f"{path}: {entry['filename']} is not listed in {metadata_file}")
            if known["scene_label"] != entry["scene_label"]:
                raise ValueError(
                    f"{path}: {entry['filename']} is labelled {entry['scene_label']!r} but "
                    f"{metadata_file} says {known['scene_label']!r}"
                )
            entry["identifier"] = known["identifier"]
            entry["device"] = parse_device(entry["filename"])
        entries_by_original[split] = entries
    overlap = {e["filename"] for e in entries_by_original["train"]} & {
        e["filename"] for e in entries_by_original["test"]
    }
    if overlap:
        raise ValueError(
            f"{len(overlap)} clips are in both {train_file} and {test_file}, e.g. {min(overlap)}"
        )

    result = with_domains(plan_tasks(classes, task_classes, n_tasks, task_seed, DEFAULT_N_TASKS, save_folder),
                          task_domains, save_folder)
    opts = {"data_folder": data_folder, "subset": subset, "valid_fraction": valid_fraction,
            "valid_seed": valid_seed, "split_files": file_stamps([train_file, test_file]),
            **({} if task_domains is None else {"domain_column": domain_column})}

    def make_rows():
        used_classes = {c for task in result["task_classes"] for c in task}
        class_idx = {label: i for i, label in enumerate(classes)}
        rows_by_original, location, all_unreadable = {}, {}, []
        for split, entries in entries_by_original.items():
            rows = []
            for e in entries:
                if class_idx[e["scene_label"]] in used_classes:
                    wav = os.path.join(data_folder, *e["filename"].split("/"))
                    rows.append({"ID": os.path.splitext(os.path.basename(wav))[0], "duration": 0.0,
                                 "wav": wav, "class_idx": class_idx[e["scene_label"]],
                                 "label": e["scene_label"], "fold": FOLD_OF_SPLIT[split],
                                 "device": e["device"]})
                    if task_domains is not None:  # device, or city (identifier <city>-<loc>)
                        rows[-1]["domain"] = e["device"] if domain_column == "device" else e["identifier"].split("-")[0]
                    location[wav] = e["identifier"]
            what = f"TAU 2022 Mobile audio files of the {split} split"
            rows_by_original[split], unreadable = probe_rows(rows, what, on_bad_audio, expected=EXPECTED_LAYOUT)
            all_unreadable.extend(unreadable)
        write_unreadable_list(save_folder, all_unreadable)
        train, valid = split_train_valid(
            rows_by_original["train"], valid_fraction, valid_seed, group_of=lambda row: location[row["wav"]]
        )
        rows_by_split = {"train": train, "valid": valid, "test": rows_by_original["test"]}
        devices = sorted({r["device"] for rows in rows_by_split.values() for r in rows})
        return rows_by_split, {"subset": subset, "devices": devices}

    write_manifests_once(DATASET_NAME, save_folder, opts, result["task_classes"], make_rows, logger,
                         metadata_file=metadata_file, classes=classes, task_domains=result.get("task_domains"),
                         extra_fields=EXTRA_FIELDS + ([] if task_domains is None else ["domain"]))
    return result


def split_files(data_folder, subset):
    """Paths of the (training subset, test) split files; FileNotFoundError naming what
    was looked for when absent."""
    split_setup = os.path.join(data_folder, SPLIT_SETUP_DIR)
    evaluation_setup = os.path.join(data_folder, EVALUATION_SETUP_DIR)
    train_candidates = [os.path.join(split_setup, f"split{subset}.csv")]
    if subset == 100:
        train_candidates.append(os.path.join(evaluation_setup, "fold1_train.csv"))
    test_candidates = [
        os.path.join(split_setup, "test.csv"),
        os.path.join(evaluation_setup, "fold1_evaluate.csv"),
    ]
    found = []
    for what, candidates in (("training subset", train_candidates), ("test", test_candidates)):
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            raise FileNotFoundError(
                f"TAU 2022 Mobile {what} split file not found (looked for "
                f"{' and '.join(candidates)}). Expected {EXPECTED_LAYOUT}"
            )
        found.append(path)
    return tuple(found)


def read_tab_file(path, columns):
    """Rows of a tab-separated DCASE metadata file as dicts (values stripped).

    Raises ValueError naming the file when a column of ``columns`` is missing, a line has
    too few fields, or a file name is listed twice.
    """
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"{path} lacks the columns {missing} (header {header}); expected a "
                f"tab-separated header {chr(9).join(columns)!r}"
            )
        positions = [header.index(c) for c in columns]
        rows, seen = [], set()
        for line_no, fields in enumerate(reader, start=2):
            if not any(field.strip() for field in fields):
                continue
            if len(fields) <= max(positions):
                raise ValueError(
                    f"{path}, line {line_no}: expected {len(header)} tab-separated fields, "
                    f"got {fields}"
                )
            row = {c: fields[i].strip() for c, i in zip(columns, positions)}
            if row["filename"] in seen:
                raise ValueError(f"{path}, line {line_no}: {row['filename']} is listed twice")
            seen.add(row["filename"])
            rows.append(row)
    return rows


def parse_device(filename):
    """Recording device of a clip from its name: the last ``-`` field of
    ``audio/<scene>-<city>-<loc>-<segment>-<n>-<device>.wav`` (``a``, ``s1`` ...)."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    fields = stem.split("-")
    if len(fields) < 2 or not fields[-1]:
        raise ValueError(
            f"cannot read the device from {filename!r}: expected "
            "<scene>-<city>-<loc>-<segment>-<n>-<device>.wav"
        )
    return fields[-1]
