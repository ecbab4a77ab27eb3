"""Preparation of CochlScene for class-incremental learning.

CochlScene (Jeong & Park, 2022) has 76k 10-second, 44.1 kHz recordings of 13 acoustic
scenes, crowd-sourced from 831 users and split by user into train, validation and test.
It ships no metadata file: the folders are the metadata::

    <data_folder>/Train/<Class>/<Class>_user<NNNN>_<id>_<NNN>.wav
    <data_folder>/Val/<Class>/...
    <data_folder>/Test/<Class>/...

Class indices follow the class folder names in sorted order (:data:`CLASSES` for the
real corpus); the three splits must hold the same class folders. The official splits
are used as they are (``Val`` is the validation split). Tasks are ``task_classes`` when
given, else ``n_tasks`` groups drawn with ``task_seed``. Manifest ``fold``: 1 for Train,
2 for Val, 3 for Test.
"""

import logging
import os

from soundcl.data.manifest import write_unreadable_list
from soundcl.data.marker import digest_strings
from soundcl.data.probe import format_file_list, list_files, probe_rows
from soundcl.data.skeleton import plan_tasks, result_without_prep, write_manifests_once

logger = logging.getLogger(__name__)

DATASET_NAME = "CochlScene"
#: The 13 scene classes of the real corpus, in class-index order.
CLASSES = [
    "Bus", "Cafe", "Car", "CrowdedIndoor", "Elevator", "Kitchen", "Park",
    "ResidentialArea", "Restaurant", "Restroom", "Street", "Subway", "SubwayStation",
]
#: Our split name -> CochlScene's folder.
SPLIT_FOLDERS = {"train": "Train", "valid": "Val", "test": "Test"}
FOLD_OF_SPLIT = {"train": 1, "valid": 2, "test": 3}
DEFAULT_N_TASKS = 4
EXPECTED_LAYOUT = "<data_folder>/{Train,Val,Test}/<Class>/*.wav"


def prepare(data_folder, save_folder, task_classes=None, n_tasks=None, task_seed=1234,
            skip_prep=False, on_bad_audio="error"):
    """Write per-task train/valid/test manifests for CochlScene.

    Arguments
    ---------
    data_folder : str
        CochlScene root (holding ``Train``, ``Val`` and ``Test``).
    save_folder, task_classes, n_tasks, task_seed, skip_prep
        As for the other data sets with drawn task splits (:mod:`soundcl.data.skeleton`).

    Returns
    -------
    dict
        ``classes``, ``n_tasks``, ``task_classes`` and ``manifests``
        (``split -> [path of task 0, task 1, ...]``).

    Raises
    ------
    FileNotFoundError
        A split folder missing, or the splits' class folders differ.
    RuntimeError
        Audio files that soundfile cannot read.
    """
    data_folder = os.path.abspath(data_folder)
    save_folder = os.path.abspath(save_folder)
    if skip_prep:
        return result_without_prep(save_folder, DATASET_NAME)

    files_by_split = {}
    classes_by_split = {}
    for split, folder_name in SPLIT_FOLDERS.items():
        folder = os.path.join(data_folder, folder_name)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"CochlScene split folder not found: {folder}. Expected {EXPECTED_LAYOUT}"
                + _nesting_hint(data_folder)
            )
        classes_by_split[split] = sorted(
            name for name in os.listdir(folder)
            if not name.startswith(".") and os.path.isdir(os.path.join(folder, name))
        )
        # Only <Split>/<Class>/<file>.wav counts; deeper files would be a layout error.
        files_by_split[split] = [
            path for path in list_files(folder, (".wav",)) if path.count("/") == 1
        ]
    classes = classes_by_split["train"]
    if not classes:
        raise FileNotFoundError(
            f"CochlScene: no class folder in {os.path.join(data_folder, 'Train')}. "
            f"Expected {EXPECTED_LAYOUT}"
        )
    for split in ("valid", "test"):
        if classes_by_split[split] != classes:
            only_train = sorted(set(classes) - set(classes_by_split[split]))
            extra = sorted(set(classes_by_split[split]) - set(classes))
            raise FileNotFoundError(
                f"CochlScene: {SPLIT_FOLDERS[split]} and Train hold different class folders "
                f"(missing in {SPLIT_FOLDERS[split]}: {only_train}; only in "
                f"{SPLIT_FOLDERS[split]}: {extra}). Expected {EXPECTED_LAYOUT}"
            )
    if classes != CLASSES:
        logger.warning("CochlScene: class folders %s differ from the real corpus's %s", classes, CLASSES)
    for split, files in files_by_split.items():
        counts = {label: 0 for label in classes}
        for path in files:
            counts[path.split("/", 1)[0]] += 1
        empty = [label for label, count in counts.items() if count == 0]
        if empty:
            logger.warning("CochlScene: no wav file in %s for classes %s", SPLIT_FOLDERS[split], empty)

    result = plan_tasks(classes, task_classes, n_tasks, task_seed, DEFAULT_N_TASKS, save_folder)
    opts = {
        "data_folder": data_folder,
        # The listing is the metadata: any added or removed file invalidates manifests.
        "files": {
            split: digest_strings(files) for split, files in files_by_split.items()
        },
    }

    def make_rows():
        class_idx = {label: i for i, label in enumerate(classes)}
        rows_by_split, seen_ids, all_unreadable = {}, {}, []
        for split, files in files_by_split.items():
            folder = os.path.join(data_folder, SPLIT_FOLDERS[split])
            rows = []
            for relpath in files:
                label, name = relpath.split("/")
                clip_id, wav = os.path.splitext(name)[0], os.path.join(folder, label, name)
                if clip_id in seen_ids:
                    raise ValueError(
                        f"CochlScene: two files share the name {clip_id}: {seen_ids[clip_id]} "
                        f"and {wav}; clip ids must be unique"
                    )
                seen_ids[clip_id] = wav
                rows.append({"ID": clip_id, "duration": 0.0, "wav": wav, "class_idx": class_idx[label],
                             "label": label, "fold": FOLD_OF_SPLIT[split]})
            what = f"CochlScene {SPLIT_FOLDERS[split]} audio files"
            rows_by_split[split], unreadable = probe_rows(rows, what, on_bad_audio)
            all_unreadable.extend(unreadable)
        write_unreadable_list(save_folder, all_unreadable)
        return rows_by_split, {}

    write_manifests_once(DATASET_NAME, save_folder, opts, result["task_classes"], make_rows, logger,
                         classes=classes)
    return result


def _nesting_hint(data_folder):
    """A hint when the split folders sit one level deeper (e.g. an unzipped archive)."""
    if not os.path.isdir(data_folder):
        return f" ({data_folder} does not exist)"
    nested = [
        name for name in sorted(os.listdir(data_folder))
        if os.path.isdir(os.path.join(data_folder, name, "Train"))
    ]
    if nested:
        return f" (found Train/ under {format_file_list(nested).strip()}: point data_folder there)"
    return ""
