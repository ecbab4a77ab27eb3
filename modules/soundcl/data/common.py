"""Helpers shared by the data set preparation modules.

Every ``prepare`` function in :mod:`soundcl.data` produces the same kind of output: one
CSV manifest per (split, task), e.g. ``train_task0.csv``, with the columns in
:data:`MANIFEST_FIELDS`. This module holds the pieces they have in common:

* reading and writing manifests (atomically, so a killed run never leaves a half file);
* checking the class-incremental task definition (``task_classes``);
* splitting rows into per-task manifests;
* deciding whether manifests from an earlier run can be reused;
* building readable errors for missing or unreadable audio files.

Task indices are 0-based, matching the position in ``task_classes``.
"""

import csv
import json
import logging
import operator
import os
import re
import tempfile

logger = logging.getLogger(__name__)

#: Columns of every manifest, in order. ``ID`` is unique within a data set, ``duration``
#: is in seconds, ``wav`` is an absolute path, ``class_idx`` is the 0-based class index
#: (the position of ``label`` in the data set's class list) and ``fold`` is the
#: data set's fold (or split) number the row came from.
MANIFEST_FIELDS = ["ID", "duration", "wav", "class_idx", "label", "fold"]

#: Name of the file that records how the manifests in a save folder were made.
PREP_OPTS_FILE = "prepare_opts.json"

#: Bump when the manifest content changes for the same inputs, so that old manifests
#: are not reused by newer code.
MANIFEST_FORMAT_VERSION = 1

#: How many file names an error message lists before summarising the rest.
MAX_LISTED_FILES = 10


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------
def atomic_write_text(path, write_fn):
    """Write a file through ``write_fn(file_object)`` so that it appears all at once.

    The content goes to a temporary file in the same folder (same file system, so the
    final :func:`os.replace` is atomic); a crash leaves either the old file or the new
    one, never a truncated one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write_fn(f)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_json_atomic(path, obj):
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""

    def _write(f):
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")

    atomic_write_text(path, _write)


# ---------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------
def write_manifest(path, rows, extra_fields=()):
    """Write manifest rows to a CSV file atomically.

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
        for row in rows:
            writer.writerow(row)

    atomic_write_text(path, _write)


def read_manifest(path):
    """Read a manifest written by :func:`write_manifest`.

    Returns
    -------
    list of dict
        One dict per row with ``duration`` as float, ``class_idx`` and ``fold`` as int
        and the other fields (extra columns included) as str.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [name for name in MANIFEST_FIELDS if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a manifest: missing columns {missing}")
        rows = []
        for row in reader:
            row["duration"] = float(row["duration"])
            row["class_idx"] = int(row["class_idx"])
            row["fold"] = int(row["fold"])
            rows.append(row)
    return rows


def task_manifest_path(save_folder, split, task):
    """Path of the manifest of one split (``train``/``valid``/``test``) and task."""
    return os.path.join(save_folder, f"{split}_task{task}.csv")


def task_manifest_paths(save_folder, splits, n_tasks):
    """Dict ``split -> [manifest path of task 0, task 1, ...]``."""
    return {
        split: [task_manifest_path(save_folder, split, k) for k in range(n_tasks)]
        for split in splits
    }


def write_task_manifests(save_folder, rows_by_split, task_classes, extra_fields=()):
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

    Returns
    -------
    dict
        ``split -> list of manifest paths``, one per task, in task order.
    """
    class_to_task = {}
    for task, classes in enumerate(task_classes):
        for class_idx in classes:
            class_to_task[int(class_idx)] = task
    n_tasks = len(task_classes)

    paths = task_manifest_paths(save_folder, rows_by_split.keys(), n_tasks)
    for split, rows in rows_by_split.items():
        rows_by_task = [[] for _ in range(n_tasks)]
        for row in rows:
            task = class_to_task.get(int(row["class_idx"]))
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


# ---------------------------------------------------------------------------------------
# Task definition
# ---------------------------------------------------------------------------------------
def validate_task_classes(task_classes, n_classes):
    """Check a class-incremental task definition and return it as lists of int.

    Arguments
    ---------
    task_classes : sequence of sequence of int
        ``task_classes[k]`` lists the classes introduced in task ``k``.
    n_classes : int
        Number of classes of the data set; valid classes are ``0 .. n_classes - 1``.
        Tasks need not cover every class.

    Returns
    -------
    list of list of int

    Raises
    ------
    ValueError
        If there are no tasks, a task is empty, a class is not an integer, is outside
        ``0 .. n_classes - 1``, or appears twice (in two tasks or within one task).
    """
    if isinstance(task_classes, (str, bytes)) or not hasattr(task_classes, "__iter__"):
        raise ValueError(f"task_classes must be a list of lists of ints, got {task_classes!r}")
    task_classes = list(task_classes)
    if not task_classes:
        raise ValueError("task_classes is empty: at least one task is needed")

    owner = {}  # class -> task that first listed it
    result = []
    for task, classes in enumerate(task_classes):
        if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
            raise ValueError(
                f"task_classes[{task}] must be a list of class indices, got {classes!r}"
            )
        classes = list(classes)
        if not classes:
            raise ValueError(f"task {task} in task_classes is empty: every task needs a class")
        checked = []
        for class_idx in classes:
            # operator.index accepts int-like values (numpy ints) but not floats or bools
            # given as strings; bool is rejected explicitly as it is surely a mistake.
            try:
                if isinstance(class_idx, bool):
                    raise TypeError
                class_idx = operator.index(class_idx)
            except TypeError:
                raise ValueError(
                    f"task {task} in task_classes has a non-integer class {class_idx!r}"
                ) from None
            if not 0 <= class_idx < n_classes:
                raise ValueError(
                    f"task {task} in task_classes has unknown class {class_idx}: "
                    f"classes must be in 0..{n_classes - 1}"
                )
            if class_idx in owner:
                other = owner[class_idx]
                where = f"twice in task {task}" if other == task else (
                    f"in both task {other} and task {task}"
                )
                raise ValueError(
                    f"class {class_idx} appears {where} of task_classes: "
                    "tasks must not overlap"
                )
            owner[class_idx] = task
            checked.append(class_idx)
        result.append(checked)
    return result


# ---------------------------------------------------------------------------------------
# Reuse of earlier preparations
# ---------------------------------------------------------------------------------------
def _jsonable(obj):
    """Normalise ``obj`` the way a JSON round trip would (tuples become lists, ...).

    Comparing normalised values means ``(1, 2)`` given now matches ``[1, 2]`` stored.
    """
    return json.loads(json.dumps(obj, sort_keys=True))


def _file_stamp(path):
    """Size and modification time (ns) of a file, to notice that it changed."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _prep_record(opts, metadata_file, manifests):
    record = {"format_version": MANIFEST_FORMAT_VERSION, "opts": _jsonable(opts)}
    record["metadata"] = _file_stamp(metadata_file) if metadata_file else None
    if manifests is not None:
        record["manifests"] = sorted(os.path.basename(p) for p in _flatten_paths(manifests))
    return record


def _flatten_paths(manifests):
    """Accept a list of paths or a ``split -> [paths]`` dict; yield the paths."""
    if isinstance(manifests, dict):
        for paths in manifests.values():
            yield from paths
    else:
        yield from manifests


def mark_prep_done(save_folder, opts, metadata_file=None, manifests=None):
    """Record that the manifests in ``save_folder`` were made from ``opts``.

    Writes :data:`PREP_OPTS_FILE` holding ``opts`` (must be JSON-serialisable), the size
    and modification time of ``metadata_file`` (when given) and the names of the
    manifests written (when given; a list of paths or a ``split -> [paths]`` dict).
    Call it only after every manifest has been written.
    """
    record = _prep_record(opts, metadata_file, manifests)
    write_json_atomic(os.path.join(save_folder, PREP_OPTS_FILE), record)


def clear_prep_done(save_folder):
    """Forget an earlier preparation (call before rewriting manifests).

    If the rewrite is then interrupted, the next run will not trust the mixture of old
    and new manifests.
    """
    path = os.path.join(save_folder, PREP_OPTS_FILE)
    if os.path.exists(path):
        os.remove(path)


def prep_is_current(save_folder, opts, metadata_file=None, manifests=None):
    """Whether the manifests in ``save_folder`` can be reused for ``opts``.

    True only when :data:`PREP_OPTS_FILE` exists and records exactly the same options,
    the same size and modification time of ``metadata_file`` (when given), and every
    manifest it lists (and every one in ``manifests``, when given) still exists.
    """
    record_path = os.path.join(save_folder, PREP_OPTS_FILE)
    if not os.path.isfile(record_path):
        return False
    try:
        with open(record_path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        logger.warning("Ignoring unreadable %s", record_path)
        return False
    if metadata_file is not None and not os.path.isfile(metadata_file):
        return False

    current = _prep_record(opts, metadata_file, None)
    for key in ("format_version", "opts", "metadata"):
        if stored.get(key) != current[key]:
            return False

    expected = set(stored.get("manifests", []))
    if manifests is not None:
        wanted = {os.path.basename(p) for p in _flatten_paths(manifests)}
        if not wanted <= expected:
            return False
        expected |= wanted
    return all(os.path.isfile(os.path.join(save_folder, name)) for name in expected)


# ---------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------
def format_file_list(paths, limit=MAX_LISTED_FILES):
    """Indented list of the first ``limit`` paths, plus how many were left out."""
    paths = list(paths)
    lines = [f"  {p}" for p in paths[:limit]]
    if len(paths) > limit:
        lines.append(f"  ... and {len(paths) - limit} more")
    return "\n".join(lines)


def missing_files_error(missing, what):
    """Build (not raise) a FileNotFoundError for missing files.

    Arguments
    ---------
    missing : list of str
        The missing paths.
    what : str
        What the files are, e.g. ``"UrbanSound8K audio files"``.

    Returns
    -------
    FileNotFoundError
        Message with the total count and the first :data:`MAX_LISTED_FILES` paths.
    """
    missing = list(missing)
    return FileNotFoundError(
        f"{len(missing)} {what} are missing (first {min(len(missing), MAX_LISTED_FILES)} "
        f"listed):\n{format_file_list(missing)}"
    )


# ---------------------------------------------------------------------------------------
# Helpers of the split-based data sets (VGGSound, CochlScene, TAU 2022 Mobile)
# ---------------------------------------------------------------------------------------
#: File written next to the manifests with the class list and the task split actually
#: used (classes may be dropped and tasks drawn at preparation time); read back when
#: ``skip_prep=True``.
DATASET_INFO_FILE = "dataset_info.json"


def draw_task_classes(n_classes, n_tasks, seed):
    """Shuffle classes ``0 .. n_classes - 1`` with ``seed`` and cut them into tasks.

    Task sizes differ by at most one class; the first ``n_classes % n_tasks`` tasks get
    the extra class. Each task's classes are sorted. The same arguments always give the
    same split (``numpy.random.default_rng``).

    Returns
    -------
    list of list of int
    """
    import numpy as np

    for name, value in (("n_classes", n_classes), ("n_tasks", n_tasks)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if n_tasks > n_classes:
        raise ValueError(
            f"cannot split {n_classes} classes into {n_tasks} tasks: every task needs a class"
        )
    order = np.random.default_rng(int(seed)).permutation(int(n_classes)).tolist()
    base, extra = divmod(int(n_classes), int(n_tasks))
    tasks, start = [], 0
    for task in range(int(n_tasks)):
        size = base + (1 if task < extra else 0)
        tasks.append(sorted(order[start:start + size]))
        start += size
    return tasks


def resolve_task_classes(task_classes, n_tasks, task_seed, n_classes):
    """The task split: ``task_classes`` when given (validated), else drawn.

    Arguments
    ---------
    task_classes : list of list of int or None
        Explicit split; ``None`` draws ``n_tasks`` groups with :func:`draw_task_classes`.
    n_tasks : int or None
        Number of tasks to draw; when both are given they must agree.
    task_seed : int
        Seed of the drawn split.
    n_classes : int
        Number of classes of the prepared data set.
    """
    if task_classes is None:
        if n_tasks is None:
            raise ValueError("give task_classes (explicit split) or n_tasks (drawn split)")
        return draw_task_classes(n_classes, n_tasks, task_seed)
    task_classes = validate_task_classes(task_classes, n_classes)
    if n_tasks is not None and int(n_tasks) != len(task_classes):
        raise ValueError(
            f"n_tasks={n_tasks} but task_classes lists {len(task_classes)} tasks; give one "
            "of them or make them agree"
        )
    return task_classes


def split_train_valid(rows, valid_fraction, seed, group_key=None):
    """Hold out a seeded, class-stratified validation part of training rows.

    Within each class, groups (rows sharing ``row[group_key]``, e.g. a recording
    location, so that near-duplicate clips never straddle the split; each row is its
    own group when ``group_key`` is None) are shuffled with ``seed`` and taken for
    validation until ``valid_fraction`` of the class's rows is reached (at least one
    group when the class has two or more groups, so each class can be validated, and
    never every group, so each class keeps training clips). A group spanning several
    classes goes wherever its first class (in row order) sends it.

    Returns
    -------
    (train_rows, valid_rows) : lists in the input order.
    """
    import numpy as np

    if not 0.0 <= float(valid_fraction) < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    if float(valid_fraction) == 0.0:
        return list(rows), []

    def group_of(index, row):
        return row[group_key] if group_key is not None else index

    # Groups of each class in first-appearance order (deterministic input to the shuffle).
    groups_by_class, size_of_group, class_of_group = {}, {}, {}
    for index, row in enumerate(rows):
        group = group_of(index, row)
        size_of_group[group] = size_of_group.get(group, 0) + 1
        if group not in class_of_group:
            class_of_group[group] = row["class_idx"]
            groups_by_class.setdefault(row["class_idx"], []).append(group)

    valid_groups = set()
    for class_idx in sorted(groups_by_class):
        groups = groups_by_class[class_idx]
        if len(groups) < 2:
            continue
        rng = np.random.default_rng([int(seed), int(class_idx)])
        order = [groups[i] for i in rng.permutation(len(groups))]
        target = valid_fraction * sum(size_of_group[g] for g in groups)
        taken = 0
        for group in order[:-1]:  # never the last group: the class keeps training data
            if taken >= target and taken > 0:
                break
            valid_groups.add(group)
            taken += size_of_group[group]
    train, valid = [], []
    for index, row in enumerate(rows):
        (valid if group_of(index, row) in valid_groups else train).append(row)
    return train, valid


def probe_durations(paths, what):
    """Durations in seconds of audio files (from their headers, via soundfile).

    Returns
    -------
    (durations, unreadable) : dict ``path -> seconds`` for the readable files and a
    list of ``"path (reason)"`` strings for the others.
    """
    import soundfile

    durations, unreadable = {}, []
    for path in paths:
        try:
            info = soundfile.info(path)
        except RuntimeError as err:  # soundfile.LibsndfileError derives from it
            unreadable.append(f"{path} ({err})")
            continue
        if info.samplerate <= 0 or info.frames <= 0:
            unreadable.append(f"{path} (empty: {info.frames} frames)")
            continue
        durations[path] = round(info.frames / info.samplerate, 6)
    if unreadable:
        logger.warning("%d %s cannot be read", len(unreadable), what)
    return durations, unreadable


def unreadable_files_error(unreadable, what):
    """Build (not raise) a RuntimeError listing files soundfile cannot read."""
    return RuntimeError(
        f"{len(unreadable)} {what} cannot be read by soundfile (first "
        f"{min(len(unreadable), MAX_LISTED_FILES)} listed; rerun with --on_bad_audio=skip to "
        f"leave them out):\n{format_file_list(unreadable)}"
    )


UNREADABLE_LIST_FILE = "unreadable_audio.txt"


def handle_unreadable(unreadable, what, on_bad_audio, save_folder):
    """Apply the ``on_bad_audio`` policy to files whose headers cannot be read.

    ``error`` (default): raise, listing them. ``skip``: the caller drops them;
    they are listed in ``<save_folder>/unreadable_audio.txt``, which the run's
    bad-audio report picks up.
    """
    if on_bad_audio not in ("error", "skip"):
        raise ValueError(f"on_bad_audio={on_bad_audio!r} is not valid: expected error or skip")
    path = os.path.join(save_folder, UNREADABLE_LIST_FILE)
    if not unreadable:
        if os.path.exists(path):
            os.remove(path)
        return
    if on_bad_audio == "error":
        raise unreadable_files_error(unreadable, what)
    logger.warning("skipping %d %s that cannot be read (listed in %s)", len(unreadable), what, path)
    os.makedirs(save_folder, exist_ok=True)
    atomic_write_text(path, lambda f: f.write("\n".join(unreadable) + "\n"))


def list_files(folder, extensions):
    """Relative paths (``/``-separated, sorted) of the files under ``folder`` whose
    names end with one of ``extensions`` (case-insensitive), hidden files excluded."""
    extensions = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/"))
    return sorted(found)


def digest_strings(strings):
    """SHA-1 of a sequence of strings: a short fingerprint of e.g. an audio listing,
    stored in the preparation options so new or removed clips invalidate manifests."""
    import hashlib

    sha = hashlib.sha1()
    for text in strings:
        sha.update(text.encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()


def file_stamps(paths):
    """``[{path, size, mtime_ns}, ...]`` of existing files (to notice edits)."""
    return [_file_stamp(p) for p in paths]


def write_dataset_info(save_folder, classes, task_classes, **extra):
    """Write :data:`DATASET_INFO_FILE`: the classes and task split of the manifests."""
    write_json_atomic(
        os.path.join(save_folder, DATASET_INFO_FILE),
        {"classes": list(classes), "task_classes": task_classes, **extra},
    )


def plan_tasks(classes, task_classes, n_tasks, task_seed, default_n_tasks, save_folder, splits):
    """Task split and the ``prepare`` return value of a data set with ``classes``.

    ``task_classes`` given: validated and used; else ``n_tasks`` (default
    ``default_n_tasks``) groups drawn with ``task_seed``.

    Returns
    -------
    dict with ``classes``, ``n_tasks``, ``task_classes`` and ``manifests``.
    """
    if task_classes is None and n_tasks is None:
        n_tasks = default_n_tasks
    task_classes = resolve_task_classes(task_classes, n_tasks, task_seed, len(classes))
    return {
        "classes": classes,
        "n_tasks": len(task_classes),
        "task_classes": task_classes,
        "manifests": task_manifest_paths(save_folder, splits, len(task_classes)),
    }


def result_without_prep(save_folder, splits, dataset_name):
    """Return value of a ``prepare`` called with ``skip_prep=True``.

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
    n_tasks = len(info["task_classes"])
    logger.info("%s: skip_prep=True, using manifests in %s as they are", dataset_name, save_folder)
    return {
        "classes": info["classes"],
        "n_tasks": n_tasks,
        "task_classes": info["task_classes"],
        "manifests": task_manifest_paths(save_folder, splits, n_tasks),
    }

# Validation split and audio checks shared by the single-split data sets
# ---------------------------------------------------------------------------------------
def draw_valid_split(rows, groups, fraction, seed):
    """Split rows into train and valid, per class, keeping each group on one side.

    Arguments
    ---------
    rows : list of dict
        Manifest rows (``class_idx`` used).
    groups : list of str
        Group of each row (recording, location ...): clips of one group never end up
        on both sides, so validation does not see near-copies of training clips.
    fraction : float
        Target fraction of each class's clips in valid (0 <= fraction < 1); whole
        groups are drawn in a seeded random order until it is reached.
    seed : int

    Returns
    -------
    (train_rows, valid_rows), each in the input order.
    """
    import numpy as np

    if not 0 <= fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {fraction}")
    if len(groups) != len(rows):
        raise ValueError("draw_valid_split needs one group per row")
    valid_groups = set()
    by_class = {}
    for row, group in zip(rows, groups):
        by_class.setdefault(int(row["class_idx"]), {}).setdefault(group, 0)
        by_class[int(row["class_idx"])][group] += 1
    rng = np.random.RandomState(seed)
    for class_idx in sorted(by_class):
        sizes = by_class[class_idx]
        target = fraction * sum(sizes.values())
        taken = 0
        for group in rng.permutation(sorted(sizes)).tolist():
            if taken >= target:
                break
            valid_groups.add((class_idx, group))
            taken += sizes[group]
    train, valid = [], []
    for row, group in zip(rows, groups):
        (valid if (int(row["class_idx"]), group) in valid_groups else train).append(row)
    return train, valid


def check_audio_files(rows, what):
    """Raise a readable error if any ``row["wav"]`` is missing or unreadable; fill
    ``row["duration"]`` (seconds) from the file header."""
    import soundfile

    missing = [r["wav"] for r in rows if not os.path.isfile(r["wav"])]
    if missing:
        raise missing_files_error(missing, what)
    unreadable = []
    for row in rows:
        try:
            info = soundfile.info(row["wav"])
        except RuntimeError as err:  # soundfile.LibsndfileError derives from it
            unreadable.append(f"{row['wav']} ({err})")
            continue
        row["duration"] = round(info.frames / info.samplerate, 6)
    if unreadable:
        raise RuntimeError(
            f"{len(unreadable)} {what} cannot be read by soundfile (first "
            f"{min(len(unreadable), MAX_LISTED_FILES)} listed):\n{format_file_list(unreadable)}"
        )
