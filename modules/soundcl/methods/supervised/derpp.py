"""DER++: dark experience replay (Buzzega et al. 2020).

Memory: the fixed-size memory of ER-ACE (``memory_size``, ``mem_manage``; reservoir in
the paper) that also stores, for each clip, the raw logits (every class) of the model
when the clip entered the memory. The memory is chosen at the end of a task, so
these are the logits of that task's final model (eval mode, full clip); they are
part of the memory policy's state, saved with the task in ``task<k>/task_state.json``
(JSON floats round-trip float32 exactly), and never recomputed. Under DDP the memory and
its logits are the main process's (broadcast), so every process stores the same tensors.
Loss, with memory rows told apart by their clip id (the batch mixes the task's
clips and the memory clips, shuffled together):
CE(current rows, seen classes) + ``derpp_alpha`` MSE(raw logits of memory rows, stored logits)
+ ``derpp_beta`` CE(memory rows, seen classes) (the paper draws two memory batches; here the
memory rows of the batch serve both terms). No mixup.
"""
import json
import os

import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.base.contract import REQUIRED
from soundcl.memory.scores import compute_embeddings
from soundcl.core.ddp import from_main_process
from soundcl.methods.supervised.er_ace import FixedSizeReplayMemory
from soundcl.core.task_loop import TASK_STATE_FILE


class LogitMemory(FixedSizeReplayMemory):
    """A fixed-size memory policy that stores each clip's logits when it enters."""

    @classmethod
    def from_hparams(cls, hparams):
        return cls(FixedSizeReplayMemory.from_hparams(hparams))

    def __init__(self, policy):
        self.policy = policy
        self.logits = {}  # clip id -> list of floats [n_classes]

    def select(self, memory_ids, task_rows, context):
        ids = self.policy.select(memory_ids, task_rows, context)
        new = [i for i in ids if i not in self.logits]
        if new:
            classifier = context.brain.modules.classifier
            embeddings = compute_embeddings(new, context).to(context.brain.device)
            training = classifier.training
            classifier.eval()
            with torch.no_grad():
                logits = classifier(embeddings).float().cpu()
            classifier.train(training)
            self.logits.update({i: [float(v) for v in row] for i, row in zip(new, logits)})
        self.logits = {i: self.logits[i] for i in ids}  # evicted clips leave with their logits
        # The task loop trains every process on the main process's memory: the logits go with it.
        ids, self.logits, policy_state = from_main_process((ids, self.logits, self.policy.state_dict()))
        if policy_state is not None:
            self.policy.load_state_dict(policy_state)
        return ids

    def state_dict(self):
        return {"policy": self.policy.state_dict(), "logits": self.logits}

    def load_state_dict(self, state):
        if state["policy"] is not None:
            self.policy.load_state_dict(state["policy"])
        self.logits = dict(state["logits"])

    def __repr__(self):
        return f"LogitMemory({self.policy!r})"


class DerppBrain(SupervisedBrain):
    HPARAMS = {"derpp_alpha": REQUIRED, "derpp_beta": REQUIRED, "save_folder": REQUIRED, "task_dir_format": "task{}"}

    stored = {}  # clip id -> stored logits [n_classes] of the memory clips
    last_mse = 0.0  # MSE term of the last training batch (for tests)

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.stored = {}
        if self.task_id > 0:  # the memory (and its logits) chosen at the end of the previous task
            with open(os.path.join(self.task_dir(self.task_id - 1), TASK_STATE_FILE), encoding="utf-8") as f:
                logits = json.load(f)["policy_state"]["logits"]
            self.stored = {i: torch.tensor(v, dtype=torch.float32, device=self.device) for i, v in logits.items()}

    def compute_forward(self, batch, stage):
        emb, perm, lam = self.mixed_embeddings(batch, stage)
        self.raw_logits = self.modules.classifier(emb)
        return self.raw_logits.masked_fill(~self.seen_mask(self.raw_logits.device), UNSEEN_LOGIT), perm, lam

    def compute_objectives(self, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        logits = predictions[0].float()
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        from_memory = torch.tensor([i in self.stored for i in batch.id], dtype=torch.bool, device=logits.device)
        loss, mse = torch.zeros((), device=logits.device), torch.zeros((), device=logits.device)
        if (~from_memory).any():
            loss = loss + F.cross_entropy(logits[~from_memory], targets[~from_memory])
        if from_memory.any():
            stored = torch.stack([self.stored[i] for i, m in zip(batch.id, from_memory.tolist()) if m])
            mse = F.mse_loss(self.raw_logits[from_memory].float(), stored)
            loss = loss + self.hparams.derpp_alpha * mse
            loss = loss + self.hparams.derpp_beta * F.cross_entropy(logits[from_memory], targets[from_memory])
        self.last_mse = float(mse.detach())
        return loss
