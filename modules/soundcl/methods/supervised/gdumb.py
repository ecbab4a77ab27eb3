"""GDumb (Prabhu et al. 2020): greedy class-balanced memory, a model trained from scratch on it.

At task ``k`` the memory (``memory_size`` clips) takes task ``k``'s clips one by one, in a
seeded random order: while it is not full every clip enters; then a clip enters when
its class holds fewer than ``memory_size // classes seen`` clips, replacing a random clip
of the largest class (ties: the smallest class index). The model is reset to its initial
weights (as built from the YAML, seeded) at every task and trained on the memory only;
tested on tasks 0..k. The task-data policy and the memory policy compute the same memory
(same function, same seed), so the memory trained on is the memory kept. Not as in the
paper: no CutMix, no SGDR schedule (the recipe's optimiser and schedule); the input
normaliser is not reset. Under DDP every process resets to the main process's initial
weights (broadcast once), so the processes stay one model.
"""
import copy

import numpy as np

from soundcl.core.brains import SupervisedBrain
from soundcl.base.contract import REQUIRED
from soundcl.memory.policies import MemoryPolicy
from soundcl.base.randomness import derive_seed
from soundcl.core.ddp import from_main_process, unwrap
from soundcl.core.task_data import CurrentTaskWithMemory, TaskData


def gdumb_memory(memory_ids, new_rows, class_of, memory_size, rng):
    """GDumb's greedy class-balanced sampler over ``new_rows`` (in an order drawn from ``rng``)."""
    memory = list(memory_ids)
    by_class = {}
    for i in memory:
        by_class.setdefault(class_of[i], []).append(i)
    for pos in rng.permutation(len(new_rows)):
        clip_id, c = new_rows[pos]["ID"], int(new_rows[pos]["class_idx"])
        if len(memory) >= memory_size:
            if len(by_class.get(c, [])) >= memory_size // len(set(by_class) | {c}):
                continue
            largest = min(by_class, key=lambda k: (-len(by_class[k]), k))
            evicted = by_class[largest].pop(int(rng.randint(len(by_class[largest]))))
            memory.remove(evicted)
        memory.append(clip_id)
        by_class.setdefault(c, []).append(clip_id)
    return memory


def _memory_for_task(k, memory_ids, task_rows_k, class_of, memory_size, seed):
    rng = np.random.RandomState(derive_seed(seed, k, "gdumb"))
    return gdumb_memory(memory_ids, list(task_rows_k), class_of, memory_size, rng)


class GDumbMemory(MemoryPolicy):
    HPARAMS = {"memory_size": REQUIRED, "seed": REQUIRED}

    @classmethod
    def from_hparams(cls, hparams):
        return cls(int(hparams["memory_size"]), int(hparams["seed"]))

    def __init__(self, memory_size, seed):
        self.memory_size, self.seed = memory_size, seed

    def select(self, memory_ids, task_rows, context):
        class_of = {i: int(row["class_idx"]) for i, row in context.rows_by_id.items()}
        return _memory_for_task(context.task_id, memory_ids, task_rows, class_of, self.memory_size, self.seed)

    def __repr__(self):
        return f"GDumbMemory(memory_size={self.memory_size})"


class GDumbTaskData(CurrentTaskWithMemory):
    """Train on the GDumb memory of task ``k`` only; validation and test as :class:`CurrentTaskWithMemory`."""

    HPARAMS = {"memory_size": REQUIRED}

    @classmethod
    def from_hparams(cls, hparams):
        return cls(hparams["memory_size"])

    def __init__(self, memory_size):
        self.memory_size = int(memory_size)

    def select(self, k, memory_ids, task_rows, seed):
        base = super().select(k, memory_ids, task_rows, seed)
        rows_by_id = {row["ID"]: row for j in range(k + 1) for row in task_rows["train"][j]}
        class_of = {i: int(row["class_idx"]) for i, row in rows_by_id.items()}
        ids = _memory_for_task(k, memory_ids, task_rows["train"][k], class_of, self.memory_size, seed)
        return TaskData([rows_by_id[i] for i in ids], base.valid, base.test_tasks, base.test)

    def __repr__(self):
        return f"GDumbTaskData(memory_size={self.memory_size})"


class GDumbBrain(SupervisedBrain):
    HPARAMS = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        initial = {name: {key: value.cpu() for key, value in copy.deepcopy(unwrap(m).state_dict()).items()}
                   for name, m in self.modules.items() if name in ("embedding_model", "classifier")}
        self.initial_state = from_main_process(initial)

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        for name, state in self.initial_state.items():  # from scratch at every task
            unwrap(self.modules[name]).load_state_dict(state)
