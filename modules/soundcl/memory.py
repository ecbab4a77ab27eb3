"""Replay memory policies: which training clips are kept after each task.

A policy is a small object named in YAML with one method::

    select(memory_ids, task_rows, context) -> list of clip ids

``memory_ids`` is the current memory, ``task_rows`` the manifest rows of the
task just learnt, ``context`` a :class:`soundcl.continual.MemoryContext`
(model, clips, seeded RNG). The returned list is the memory used while
training the next task. Policies with state across tasks also implement
``state_dict()`` / ``load_state_dict(state)`` (JSON-serialisable).
"""


def _parse_num_keep(num_keep):
    if num_keep in ("all", "All", "ALL", None):
        return None
    num_keep = int(num_keep)
    if num_keep < 0:
        raise ValueError(f"replay_num_keep must be >= 0 or 'all', got {num_keep}")
    return num_keep


class PerTaskRandom:
    """Keep ``num_keep`` random clips of every finished task (``'all'``: all of them).

    This is the replay of the published supervised/SSL recipes
    (``replay_num_keep``); ``num_keep=0`` is plain fine-tuning.
    """

    def __init__(self, num_keep=0):
        self.num_keep = _parse_num_keep(num_keep)

    def select(self, memory_ids, task_rows, context):
        ids = sorted(row["ID"] for row in task_rows)
        if self.num_keep is None or self.num_keep >= len(ids):
            kept = ids
        else:
            kept = sorted(context.rng.choice(ids, size=self.num_keep, replace=False).tolist())
        return list(memory_ids) + kept

    def __repr__(self):
        return f"PerTaskRandom(num_keep={'all' if self.num_keep is None else self.num_keep})"
