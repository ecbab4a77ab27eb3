"""Joint training, the upper bound of class-incremental learning, as task-data policies.

``joint``: one task with every task's clips (the Brain unchanged). ``joint_incremental``:
task ``k`` trains and validates on the clips of tasks ``0..k`` (cumulative training).
"""
from soundcl.core.task_data import TaskData


class JointTraining:
    """All tasks as one: train, validate and test on every class at once.

    ``regroup`` (called by the task loop) merges the tasks, so the accuracy
    matrix is 1 x 1: the accuracy on every test clip.
    """

    HPARAMS = {}

    def regroup(self, task_rows, task_classes):
        merged = {split: [[row for rows in tasks for row in rows]] for split, tasks in task_rows.items()}
        return merged, [sorted(c for classes in task_classes for c in classes)]

    def select(self, k, memory_ids, task_rows, seed):
        return TaskData(task_rows["train"][k], task_rows["valid"][k], [k], {k: task_rows["test"][k]})

    def __repr__(self):
        return "JointTraining()"


class JointIncremental:
    """Task ``k`` trains and validates on every clip of tasks ``0..k``; tested on tasks ``0..k``."""

    HPARAMS = {}

    def select(self, k, memory_ids, task_rows, seed):
        tasks = list(range(k + 1))
        train = [row for j in tasks for row in task_rows["train"][j]]
        valid = [row for j in tasks for row in task_rows["valid"][j]]
        return TaskData(train, valid, tasks, {j: task_rows["test"][j] for j in tasks})

    def __repr__(self):
        return "JointIncremental()"
