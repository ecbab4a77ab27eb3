"""Task-data policies: which clips task ``k`` trains, validates and is tested on.

A policy has one method, ``select(k, memory_ids, task_rows, seed) -> TaskData``,
and declares the hparams it is built from in ``HPARAMS``
(:mod:`soundcl.base.contract`). The supervised and SSL recipes use
:class:`CurrentTaskWithMemory`; linear and kNN evaluation use
:class:`soundcl.methods.evaluation.linear_eval.LinearEvalSets`.
"""
import math

import numpy as np

from soundcl.base.randomness import derive_seed


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


#: How many validation clips of each earlier task join task ``k``'s validation (``valid_replay``).
VALID_REPLAY_RULES = ("fraction", "count")


class CurrentTaskWithMemory:
    """The current task plus the replay memory.

    Training: the clips of task ``k`` and of the memory. Validation: task ``k``'s
    validation clips plus, for each earlier task ``j``, random validation
    clips of ``j`` (``valid_replay``): ``count`` keeps as many as the memory
    holds training clips of ``j`` (``replay_num_keep`` for the per-task
    replay; the research code's sup_train.py, which keeps ``replay_num_keep``
    validation clips per task); ``fraction`` keeps the same fraction of ``j``'s
    validation clips as the memory holds of its training clips. Test: tasks
    ``0..k``.
    """

    # fraction (default of the recipes that predate the key) or count (cssl_sound).
    HPARAMS = {"valid_replay": "fraction"}
    valid_replay = "fraction"

    @classmethod
    def from_hparams(cls, hparams):
        return cls(valid_replay=hparams["valid_replay"])

    def __init__(self, valid_replay="fraction"):
        if valid_replay not in VALID_REPLAY_RULES:
            raise ValueError(f"valid_replay must be one of {', '.join(VALID_REPLAY_RULES)}, got {valid_replay!r}")
        self.valid_replay = valid_replay

    def select(self, k, memory_ids, task_rows, seed):
        """TaskData of task ``k``; ``task_rows`` is ``{"train"|"valid"|"test": [rows of task j]}``."""
        rows_by_id = {row["ID"]: row for j in range(k) for row in task_rows["train"][j]}
        rows_by_id.update({row["ID"]: row for j in range(k) for row in task_rows["valid"][j]})
        rng = np.random.RandomState(derive_seed(seed, k, "valid-replay"))
        train = list(task_rows["train"][k]) + [rows_by_id[i] for i in memory_ids]
        valid_ids = replayed_validation_ids(k, memory_ids, task_rows, rng, rule=self.valid_replay)
        valid = list(task_rows["valid"][k]) + [rows_by_id[i] for i in valid_ids]
        tests = list(range(k + 1))
        return TaskData(train, valid, tests, {j: task_rows["test"][j] for j in tests})

    def __repr__(self):
        return f"CurrentTaskWithMemory(valid_replay={self.valid_replay!r})"


def replayed_validation_ids(k, memory_ids, task_rows, rng, rule="fraction"):
    """For each task ``j`` before ``k``, random validation clips of ``j`` (sorted ids per task).

    ``rule="fraction"``: the same fraction of its validation clips as the
    memory holds of its training clips; ``rule="count"``: as many validation
    clips as the memory holds training clips of ``j`` (at most all of them).
    """
    memory = set(memory_ids)
    kept = []
    for j in range(k):
        train_ids = [r["ID"] for r in task_rows["train"][j]]
        valid_ids = [r["ID"] for r in task_rows["valid"][j]]
        if not train_ids or not valid_ids:
            continue
        in_memory = sum(i in memory for i in train_ids)
        if rule == "count":
            n_keep = min(in_memory, len(valid_ids))
        else:
            n_keep = int(math.ceil(in_memory / len(train_ids) * len(valid_ids)))
        if n_keep:
            kept.extend(sorted(rng.choice(valid_ids, size=n_keep, replace=False).tolist()))
    return kept


class DomainTasks:
    """Domain-incremental tasks (``task_domains``): every task holds every class of the run.

    Wraps a strategy's task-data policy. The manifests already hold one domain group per
    task (:mod:`soundcl.data.domains`); :meth:`regroup`, called by the task loop, gives every
    task all the classes (those of ``task_classes``, else of every training row), so the
    head covers them from task 0 and the "seen" classes are all of them; then the wrapped
    policy's own ``regroup`` (joint training: one task of every domain) if it has one.
    ``select`` is the wrapped policy's.
    """

    HPARAMS = {}

    def __init__(self, policy):
        self.policy = policy

    def regroup(self, task_rows, task_classes):
        classes = sorted({int(c) for group in task_classes for c in group}) if task_classes else sorted(
            {int(row["class_idx"]) for rows in task_rows["train"] for row in rows})
        groups = [list(classes) for _ in task_rows["train"]]
        if hasattr(self.policy, "regroup"):
            task_rows, groups = self.policy.regroup(task_rows, groups)
        return task_rows, [sorted(set(group)) for group in groups]

    def select(self, k, memory_ids, task_rows, seed):
        return self.policy.select(k, memory_ids, task_rows, seed)

    def __getattr__(self, name):  # the wrapped policy's other attributes (e.g. valid_replay)
        if name == "policy":
            raise AttributeError(name)
        return getattr(self.policy, name)

    def __repr__(self):
        return f"DomainTasks({self.policy!r})"
