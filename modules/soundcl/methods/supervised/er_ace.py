"""ER-ACE: experience replay with asymmetric cross-entropy (Caccia et al. 2022).

Memory: a fixed-size episodic memory (``memory_size`` clips, policy ``mem_manage``;
reservoir in the paper). Batches: the loop trains on the current task's clips plus
the memory clips, shuffled together (as the other replay recipes). The memory
batch is the rows of old classes (in class-incremental splits the memory holds
exactly those) plus a fixed, seeded subset of the current task's clips, as many
per current class as the memory holds per old class: in the paper the buffer is
updated during the stream, so its batches hold current-task samples that compete
with the old classes under the full loss; without them the new classes are never
pushed above the old ones and are never predicted. Loss: mean cross-entropy of
the other (incoming) rows with logits masked to the current task's classes (the
paper masks to the classes present in the incoming batch; with 2-class tasks
these nearly always coincide) + mean cross-entropy of the memory-batch rows over
every seen class. No mixup (``use_mixup`` must be False).
"""
import numpy as np
import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.memory.policies import MEMORY_POLICIES, MemoryPolicy
from soundcl.base.randomness import derive_seed


class FixedSizeReplayMemory(MemoryPolicy):
    """Builder of the fixed-size memory of ER-ACE and DER++: ``memory_size`` clips chosen by ``mem_manage``."""

    HPARAMS = {"memory_size": REQUIRED, "mem_manage": REQUIRED, "use_mixup": REQUIRED}
    SUPPORTED = ("random", "reservoir", "balanced_random", "prototype")

    @classmethod
    def from_hparams(cls, hparams):
        if hparams["use_mixup"]:  # both strategies with this memory tell memory rows apart: no mixing of rows
            raise ConfigError(f"use_mixup=True is not supported by strategy={hparams['strategy']}: set use_mixup=False")
        mem_manage = str(hparams["mem_manage"])
        if mem_manage not in cls.SUPPORTED:
            raise ConfigError(f"mem_manage={mem_manage!r} is not valid with strategy={hparams['strategy']}: "
                              f"expected one of {', '.join(cls.SUPPORTED)}")
        return MEMORY_POLICIES[mem_manage](hparams["memory_size"])


class ERACEBrain(SupervisedBrain):
    HPARAMS = {}

    buffer_ids = frozenset()  # current-task clips that also count as memory rows

    def prepare_task_data(self, task_dir, task_data):
        """Choose the current-task clips of the memory batch: per current class, as many
        (seeded, fixed for the task) as the memory holds per old class."""
        super().prepare_task_data(task_dir, task_data)
        current = set(self.task_classes[self.task_id])
        by_class = {}
        for row in task_data.train:
            by_class.setdefault(int(row["class_idx"]), []).append(row["ID"])
        old = [c for c in by_class if c not in current]
        per_class = sum(len(by_class[c]) for c in old) // max(1, len(old))
        rng = np.random.RandomState(derive_seed(self.hparams.seed, self.task_id, "er_ace"))
        self.buffer_ids = frozenset(
            i for c in sorted(current & set(by_class))
            for i in rng.choice(sorted(by_class[c]), size=min(per_class, len(by_class[c])), replace=False).tolist()
        )

    def memory_rows(self, targets, ids):
        """Bool [batch]: rows of the memory batch (old classes, and the current clips of ``buffer_ids``)."""
        current = torch.as_tensor(self.task_classes[self.task_id], device=targets.device)
        in_buffer = torch.tensor([i in self.buffer_ids for i in ids], dtype=torch.bool, device=targets.device)
        return ~torch.isin(targets, current) | in_buffer

    def compute_objectives(self, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        logits, _, _ = predictions
        logits = logits.float()
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        from_memory = self.memory_rows(targets, list(batch.id))
        current_mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        current_mask[self.task_classes[self.task_id]] = True
        self.last_masks = (from_memory.clone(), current_mask.clone())  # for tests
        loss = torch.zeros((), device=logits.device)
        if (~from_memory).any():
            incoming = logits[~from_memory].masked_fill(~current_mask, UNSEEN_LOGIT)
            loss = loss + F.cross_entropy(incoming, targets[~from_memory])
        if from_memory.any():
            loss = loss + F.cross_entropy(logits[from_memory], targets[from_memory])  # every seen class
        return loss
