"""Manifests: the CSV files every ``prepare`` of :mod:`soundcl.data` writes.

One manifest per (split, task), e.g. ``train_task0.csv``, with the columns in
:data:`MANIFEST_FIELDS` (plus data-set specific ones such as ``device``). Task indices
are 0-based, matching the position in ``task_classes``. Next to them may lie
:data:`UNREADABLE_LIST_FILE`, the audio files left out because soundfile cannot read
them, which the run's bad-audio report picks up.
"""

import csv
import logging
import os
import re

from speechbrain.dataio.dataio import load_data_csv

from soundcl.base.atomic import atomic_write_text
from soundcl.data.domains import check_domains_found, task_of_row

logger = logging.getLogger(__name__)

#: Columns of every manifest, in order. ``ID`` is unique within a data set, ``duration``
#: is in seconds, ``wav`` is an absolute path, ``class_idx`` is the 0-based class index
#: (the position of ``label`` in the data set's class list) and ``fold`` is the
#: data set's fold (or split) number the row came from.
MANIFEST_FIELDS = ["ID", "duration", "wav", "class_idx", "label", "fold"]

#: Audio files left out under ``on_bad_audio="skip"``, one ``path (reason)`` a line.
UNREADABLE_LIST_FILE = "unreadable_audio.txt"


class _Verbatim(dict):
    """Replacements for ``load_data_csv`` that keep any ``$word`` as it is: our
    manifests hold absolute paths, and a ``$`` in one is not a variable."""

    def __missing__(self, key):
        return "$" + key


def write_manifest(path, rows, extra_fields=()):
    """Write manifest rows to a CSV file atomically; returns nothing.

    Arguments
    ---------
    path : str
        Destination CSV file; its folder is created if needed.
    rows : iterable of dict
        Each row must have (at least) the keys in :data:`MANIFEST_FIELDS`; keys that are
        in neither :data:`MANIFEST_FIELDS` nor ``extra_fields`` are an error, so that a
        typo does not silently drop a column.
    extra_fields : sequence of str
        Data-set specific columns written after the standard ones (e.g. ``device``);
        :func:`read_manifest` returns them as str.
    """
    fieldnames = MANIFEST_FIELDS + [f for f in extra_fields if f not in MANIFEST_FIELDS]

    def _write(f):
        writer = csv.DictWriter(f, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write_text(path, _write)


def read_manifest(path):
    """Read a manifest written by :func:`write_manifest`.

    Returns
    -------
    list of dict
        One dict per row, in file order and with the columns in file order: ``duration``
        as float, ``class_idx`` and ``fold`` as int, the other fields (extra columns
        included) as str.

    Raises
    ------
    ValueError
        The file lacks a column of :data:`MANIFEST_FIELDS`, or lists an ID twice.
    """
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    missing = [name for name in MANIFEST_FIELDS if name not in header]
    if missing:
        raise ValueError(f"{path} is not a manifest: missing columns {missing}")
    rows = []
    for clip_id, row in load_data_csv(path, replacements=_Verbatim()).items():
        row = {"ID": clip_id, **row}
        row["class_idx"] = int(row["class_idx"])
        row["fold"] = int(row["fold"])
        rows.append(row)
    return rows


def task_manifest_path(save_folder, split, task):
    """Path (str) of the manifest of one split (``train``/``valid``/``test``) and task."""
    return os.path.join(save_folder, f"{split}_task{task}.csv")


def task_manifest_paths(save_folder, splits, n_tasks):
    """Dict ``split -> [manifest path of task 0, task 1, ...]``."""
    return {
        split: [task_manifest_path(save_folder, split, k) for k in range(n_tasks)]
        for split in splits
    }


def write_task_manifests(save_folder, rows_by_split, task_classes, extra_fields=(), task_domains=None):
    """Split rows by task and write one manifest per (split, task).

    Arguments
    ---------
    save_folder : str
        Folder for the manifests.
    rows_by_split : dict
        ``split name -> list of manifest rows`` (e.g. ``train``, ``valid``, ``test``).
    task_classes : list of list of int
        Classes of each task (already validated); task ``k`` gets the rows whose
        ``class_idx`` is in ``task_classes[k]``. Rows of classes in no task are dropped.
    extra_fields : sequence of str
        Extra manifest columns, passed to :func:`write_manifest`.
    task_domains : list of list of str, optional
        Domain-incremental split (:mod:`soundcl.data.domains`): task ``k`` gets the rows
        of the classes of ``task_classes`` whose ``domain`` is in ``task_domains[k]``.

    Returns
    -------
    dict
        ``split -> list of manifest paths``, one per task, in task order.
    """
    task_of = task_of_row(task_classes, task_domains)
    n_tasks = len(task_classes if task_domains is None else task_domains)
    if task_domains is not None:
        check_domains_found(rows_by_split.get("train", []), task_domains)
    paths = task_manifest_paths(save_folder, rows_by_split.keys(), n_tasks)
    for split, rows in rows_by_split.items():
        rows_by_task = [[] for _ in range(n_tasks)]
        for row in rows:
            task = task_of(row)
            if task is not None:
                rows_by_task[task].append(row)
        for task, task_rows in enumerate(rows_by_task):
            write_manifest(paths[split][task], task_rows, extra_fields=extra_fields)
        _remove_stale_task_manifests(save_folder, split, n_tasks)
    return paths


def _remove_stale_task_manifests(save_folder, split, n_tasks):
    """Delete ``{split}_task{k}.csv`` for ``k >= n_tasks`` left by an earlier run.

    Otherwise a rerun with fewer tasks would leave manifests that look current but
    belong to another task definition.
    """
    pattern = re.compile(rf"^{re.escape(split)}_task(\d+)\.csv$")
    for name in os.listdir(save_folder):
        match = pattern.match(name)
        if match and int(match.group(1)) >= n_tasks:
            logger.info("Removing stale manifest %s", os.path.join(save_folder, name))
            os.remove(os.path.join(save_folder, name))


def write_unreadable_list(save_folder, unreadable):
    """List ``unreadable`` (``"path (reason)"`` strings) in :data:`UNREADABLE_LIST_FILE`
    of ``save_folder``, or remove that file when the list is empty; returns nothing."""
    path = os.path.join(save_folder, UNREADABLE_LIST_FILE)
    if unreadable:
        atomic_write_text(path, "\n".join(unreadable) + "\n")
    elif os.path.exists(path):
        os.remove(path)
