"""ER-ACE: experience replay with asymmetric cross-entropy (Caccia et al. 2022).

Memory: a fixed-size episodic memory (``memory_size`` clips, policy ``mem_manage``;
reservoir in the paper). Batches: the loop trains on the current task's clips plus
the memory clips, shuffled together (as the other replay recipes); a row is a
*memory* row when its class is an old class (in class-incremental splits the
memory holds exactly the clips of old classes). Loss: mean cross-entropy of the
current rows with logits masked to the current task's classes (the paper masks
to the classes present in the incoming batch; with 2-class tasks these nearly
always coincide) + mean cross-entropy of the memory rows over every seen class.
No mixup (``use_mixup`` must be False).
"""
import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.contract import REQUIRED, ConfigError
from soundcl.memory import MEMORY_POLICIES, MemoryPolicy


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

    def memory_rows(self, targets):
        """Bool [batch]: rows of old classes, i.e. from the memory."""
        current = torch.as_tensor(self.task_classes[self.task_id], device=targets.device)
        return ~torch.isin(targets, current)

    def compute_objectives(self, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        logits, _, _ = predictions
        logits = logits.float()
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        from_memory = self.memory_rows(targets)
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
