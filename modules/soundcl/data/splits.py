"""Class-incremental task splits and the validation split of the training clips.

The task split says which classes each task introduces (``task_classes[k]`` lists the
0-based class indices of task ``k``): given explicitly and checked by
:func:`validate_task_classes`, or drawn with a seed by :func:`draw_task_classes`.
:func:`split_train_valid` is the one validation split of every ``prepare`` that draws its
validation clips from the training clips.
"""

import operator

import numpy as np


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



def draw_task_classes(n_classes, n_tasks, seed):
    """Shuffle classes ``0 .. n_classes - 1`` with ``seed`` and cut them into tasks.

    Task sizes differ by at most one class; the first ``n_classes % n_tasks`` tasks get
    the extra class. Each task's classes are sorted. The same arguments always give the
    same split (``numpy.random.default_rng``).

    Returns
    -------
    list of list of int
    """
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


def split_train_valid(rows, valid_fraction, seed, group_of=None):
    """Hold out a seeded, class-stratified validation part of training rows.

    Within each class, groups (rows for which ``group_of(row)`` is the same, e.g. a
    recording location, so that near-duplicate clips never straddle the split; each row
    is its own group when ``group_of`` is None) are shuffled with ``seed`` and taken for
    validation until ``valid_fraction`` of the class's rows is reached (at least one
    group when the class has two or more groups, so each class can be validated, and
    never every group, so each class keeps training clips). A group spanning several
    classes goes wherever its first class (in row order) sends it.

    Returns
    -------
    (train_rows, valid_rows) : lists in the input order.
    """
    if not 0.0 <= float(valid_fraction) < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    if float(valid_fraction) == 0.0:
        return list(rows), []
    groups = [index if group_of is None else group_of(row) for index, row in enumerate(rows)]

    # Groups of each class in first-appearance order (deterministic input to the shuffle).
    groups_by_class, size_of_group, class_of_group = {}, {}, {}
    for group, row in zip(groups, rows):
        size_of_group[group] = size_of_group.get(group, 0) + 1
        if group not in class_of_group:
            class_of_group[group] = int(row["class_idx"])
            groups_by_class.setdefault(int(row["class_idx"]), []).append(group)

    valid_groups = set()
    for class_idx in sorted(groups_by_class):
        class_groups = groups_by_class[class_idx]
        if len(class_groups) < 2:
            continue
        rng = np.random.default_rng([int(seed), class_idx])
        order = [class_groups[i] for i in rng.permutation(len(class_groups))]
        target = valid_fraction * sum(size_of_group[g] for g in class_groups)
        taken = 0
        for group in order[:-1]:  # never the last group: the class keeps training data
            if taken >= target and taken > 0:
                break
            valid_groups.add(group)
            taken += size_of_group[group]
    train, valid = [], []
    for group, row in zip(groups, rows):
        (valid if group in valid_groups else train).append(row)
    return train, valid
