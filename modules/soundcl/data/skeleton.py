"""The flow every ``prepare`` of :mod:`soundcl.data` shares.

A ``prepare`` reads its data set's own layout, settles the task split and the options
that decide the manifests, then hands over to :func:`write_manifests_once`: reuse the
manifests of an earlier run when they are current, else make the rows, write one
manifest per (split, task) and mark the preparation done.

The data sets with official splits and drawn task splits (VGGSound, CochlScene, TAU 2022
Mobile) also use :func:`plan_tasks` (task split and return value),
:func:`result_without_prep` (``skip_prep=True``) and write :data:`DATASET_INFO_FILE`.
Their ``prepare`` functions share these arguments:

save_folder : str
    Where ``{train,valid,test}_task{k}.csv``, :data:`DATASET_INFO_FILE` and
    ``prepare_opts.json`` go.
task_classes : list of list of int, optional
    Explicit task split; ``None`` draws ``n_tasks`` groups with ``task_seed``.
n_tasks : int, optional
    Number of drawn tasks (default: the module's ``DEFAULT_N_TASKS``); when
    ``task_classes`` is given too, it must agree with it.
task_seed : int
    Seed of the drawn task split.
skip_prep : bool
    If True, write and check nothing; return what the earlier preparation wrote.
"""

import json
import logging
import os

from soundcl.base.atomic import write_json_atomic
from soundcl.data.domains import validate_task_domains
from soundcl.data.manifest import task_manifest_paths, write_task_manifests
from soundcl.data.marker import clear_prep_done, mark_prep_done, prep_is_current
from soundcl.data.splits import resolve_task_classes

logger = logging.getLogger(__name__)

#: The splits of every data set, in manifest order.
SPLITS = ("train", "valid", "test")

#: File written next to the manifests with the class list and the task split actually
#: used (classes may be dropped and tasks drawn at preparation time); read back when
#: ``skip_prep=True``.
DATASET_INFO_FILE = "dataset_info.json"


def write_manifests_once(name, save_folder, opts, task_classes, make_rows, log,
                         metadata_file=None, extra_fields=(), classes=None, task_domains=None):
    """Write the manifests of a preparation unless an earlier one is current.

    Arguments
    ---------
    name : str
        The data set's name, in log lines and in the recorded options.
    save_folder : str
        Folder of the manifests and of the marker.
    opts : dict
        Everything else (JSON-serialisable) that decides the manifests' content: a
        later call with the same ``name``, ``task_classes`` and ``opts`` (and an
        unchanged ``metadata_file``) reuses them.
    task_classes : list of list of int
        The validated task split.
    make_rows : callable
        ``make_rows()`` -> ``(rows_by_split, info)``: the manifest rows of each split of
        :data:`SPLITS`, and None or a dict of entries for :data:`DATASET_INFO_FILE`
        (written with ``classes``, ``task_classes`` and the clip count of each split).
        Called only when the manifests must be made.
    log : logging.Logger
        The data set module's logger (so its log level applies).
    metadata_file : str, optional
        The data set's metadata file, whose size and time are recorded.
    extra_fields : sequence of str
        Data-set specific manifest columns.
    classes : list of str, optional
        The class names, for :data:`DATASET_INFO_FILE`.
    task_domains : list of list of str, optional
        Domain-incremental split (:mod:`soundcl.data.domains`; the rows need a ``domain``).

    Returns
    -------
    dict or None
        The rows written (``split -> rows``), or None when the manifests were reused.
    """
    opts = {"dataset": name, "task_classes": task_classes, **opts}
    if task_domains is not None:
        opts["task_domains"] = task_domains
    manifests = task_manifest_paths(save_folder, SPLITS, len(task_classes if task_domains is None else task_domains))
    if prep_is_current(save_folder, opts, metadata_file=metadata_file, manifests=manifests):
        log.info("%s: reusing prepared manifests in %s", name, save_folder)
        return None
    log.info("%s: preparing manifests in %s", name, save_folder)
    os.makedirs(save_folder, exist_ok=True)
    clear_prep_done(save_folder)
    rows_by_split, info = make_rows()
    write_task_manifests(save_folder, rows_by_split, task_classes, extra_fields=extra_fields, task_domains=task_domains)
    clips = {split: len(rows_by_split[split]) for split in SPLITS}
    if info is not None:
        write_json_atomic(
            os.path.join(save_folder, DATASET_INFO_FILE),
            {"classes": list(classes), "task_classes": task_classes, "clips": clips, **info,
             **({} if task_domains is None else {"task_domains": task_domains})},
        )
    mark_prep_done(save_folder, opts, metadata_file=metadata_file, manifests=manifests)
    log.info(
        "%s: %d tasks (%s clips)", name, len(task_classes if task_domains is None else task_domains),
        ", ".join(f"{split}: {n}" for split, n in clips.items()),
    )
    return rows_by_split


def plan_tasks(classes, task_classes, n_tasks, task_seed, default_n_tasks, save_folder):
    """Task split and the ``prepare`` return value of a data set with ``classes``.

    ``task_classes`` given: validated and used; else ``n_tasks`` (default
    ``default_n_tasks``) groups drawn with ``task_seed``.

    Returns
    -------
    dict with ``classes``, ``n_tasks``, ``task_classes`` and ``manifests``
    (``split -> [path of task 0, task 1, ...]``).
    """
    if task_classes is None and n_tasks is None:
        n_tasks = default_n_tasks
    task_classes = resolve_task_classes(task_classes, n_tasks, task_seed, len(classes))
    return {
        "classes": classes,
        "n_tasks": len(task_classes),
        "task_classes": task_classes,
        "manifests": task_manifest_paths(save_folder, SPLITS, len(task_classes)),
    }


def result_without_prep(save_folder, dataset_name):
    """Return value of a ``prepare`` called with ``skip_prep=True`` (as :func:`plan_tasks`).

    Reads the classes and the task split from :data:`DATASET_INFO_FILE` written by the
    earlier preparation; nothing is checked or written.
    """
    info_path = os.path.join(save_folder, DATASET_INFO_FILE)
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{dataset_name}: skip_prep=True but {info_path} cannot be read ({err}); "
            "run the preparation once without skip_prep"
        ) from None
    n_tasks = len(info.get("task_domains") or info["task_classes"])
    logger.info("%s: skip_prep=True, using manifests in %s as they are", dataset_name, save_folder)
    return {
        "classes": info["classes"],
        "n_tasks": n_tasks,
        "task_classes": info["task_classes"],
        "manifests": task_manifest_paths(save_folder, SPLITS, n_tasks),
        **({"task_domains": info["task_domains"]} if info.get("task_domains") else {}),
    }


def with_domains(result, task_domains, save_folder):
    """:func:`plan_tasks`'s result for a domain-incremental split (``task_domains``, validated):
    one task per domain group, every class of ``task_classes`` in each."""
    if task_domains is None:
        return result
    task_domains = validate_task_domains(task_domains)
    return {**result, "n_tasks": len(task_domains), "task_domains": task_domains,
            "manifests": task_manifest_paths(save_folder, SPLITS, len(task_domains))}
