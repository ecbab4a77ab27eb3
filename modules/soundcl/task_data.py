"""Task-data policies: which clips task ``k`` trains, validates and is tested on.

A policy has one method, ``select(k, memory_ids, task_rows, seed) -> TaskData``,
and declares the hparams it is built from in ``HPARAMS``
(:mod:`soundcl.contract`). The supervised and SSL recipes use
:class:`CurrentTaskWithMemory`; linear and kNN evaluation use
:class:`soundcl.linear_eval.LinearEvalSets`.
"""
import math

import numpy as np

from soundcl.randomness import derive_seed


class TaskData:
    """The clips task ``k`` trains, validates and is tested on.

    Attributes
    ----------
    train : list of manifest rows
    valid : list of manifest rows
    test_tasks : list of int
        Tasks whose test sets fill row ``k`` of the accuracy matrix.
    test : dict task -> list of manifest rows
    """

    def __init__(self, train, valid, test_tasks, test):
        self.train = list(train)
        self.valid = list(valid)
        self.test_tasks = list(test_tasks)
        self.test = dict(test)


class CurrentTaskWithMemory:
    """The current task plus the replay memory.

    Training: the clips of task ``k`` and of the memory. Validation: task ``k``'s
    validation clips plus, for each earlier task, the same fraction of its
    validation clips as the memory holds of its training clips. Test: tasks
    ``0..k``.
    """

    HPARAMS = {}

    def select(self, k, memory_ids, task_rows, seed):
        """TaskData of task ``k``; ``task_rows`` is ``{"train"|"valid"|"test": [rows of task j]}``."""
        rows_by_id = {row["ID"]: row for j in range(k) for row in task_rows["train"][j]}
        rows_by_id.update({row["ID"]: row for j in range(k) for row in task_rows["valid"][j]})
        rng = np.random.RandomState(derive_seed(seed, k, "valid-replay"))
        train = list(task_rows["train"][k]) + [rows_by_id[i] for i in memory_ids]
        valid_ids = replayed_validation_ids(k, memory_ids, task_rows, rng)
        valid = list(task_rows["valid"][k]) + [rows_by_id[i] for i in valid_ids]
        tests = list(range(k + 1))
        return TaskData(train, valid, tests, {j: task_rows["test"][j] for j in tests})

    def __repr__(self):
        return "CurrentTaskWithMemory()"


def replayed_validation_ids(k, memory_ids, task_rows, rng):
    """For each task before ``k``, the same fraction of its validation clips as
    the memory holds of its training clips (sorted ids per task)."""
    memory = set(memory_ids)
    kept = []
    for j in range(k):
        train_ids = [r["ID"] for r in task_rows["train"][j]]
        valid_ids = [r["ID"] for r in task_rows["valid"][j]]
        if not train_ids or not valid_ids:
            continue
        fraction = sum(i in memory for i in train_ids) / len(train_ids)
        n_keep = int(math.ceil(fraction * len(valid_ids)))
        if n_keep:
            kept.extend(sorted(rng.choice(valid_ids, size=n_keep, replace=False).tolist()))
    return kept
