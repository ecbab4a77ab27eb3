"""BiC (Wu et al. 2019, "Large Scale Incremental Learning"): a bias-correction layer for the new classes.

Replay as ``finetune_or_replay`` (``replay_num_keep`` random clips of every finished task).
From task 1 on, :class:`BiCTaskData` holds a balanced slice of the training clips out of
training: per old class ``ceil(bic_holdout x`` its memory clips``)`` (at least one clip of the
class stays in training), per new class as many as the old classes' mean (the paper's split of
the exemplars and of the new data). Once the task's best weights are loaded (``end_task``) the
model is frozen and two parameters are fitted on the held-out clips: the logits ``o`` of the
task's classes become ``alpha * o + beta``, the other classes' stay as they are; cross-entropy
over the seen classes, full batch, L-BFGS (the problem is convex in (alpha, beta)). Each task's
(alpha, beta) then stay fixed and correct its classes' logits in every later stage (training,
validation, test), as in the paper's code. Task 0 has no old classes: its layer is the identity.
The parameters of every task are written to ``save/task<k>/bic.pt`` (atomically) and reloaded at
the next task's ``begin_task``, so a resumed run is exact.
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from soundcl.base.atomic import atomic_path
from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.base.randomness import derive_seed
from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.core.task_data import CurrentTaskWithMemory

BIC_FILE = "bic.pt"
#: L-BFGS iterations of the (alpha, beta) fit: two parameters of a convex loss converge in tens.
BIC_LBFGS_ITERATIONS = 100


class BiCTaskData(CurrentTaskWithMemory):
    """:class:`CurrentTaskWithMemory` with a balanced held-out slice (``bias_rows``) out of training."""

    HPARAMS = {**CurrentTaskWithMemory.HPARAMS,
               # bic: fraction of each old class's memory clips held out to fit the bias correction.
               "bic_holdout": 0.1}

    @classmethod
    def from_hparams(cls, hparams):
        return cls(valid_replay=hparams["valid_replay"], holdout=hparams["bic_holdout"])

    def __init__(self, valid_replay="fraction", holdout=0.1):
        super().__init__(valid_replay)
        holdout = float(holdout)
        if not 0.0 < holdout < 1.0:
            raise ConfigError(f"bic_holdout must be in (0, 1), got {holdout}")
        self.holdout = holdout

    def select(self, k, memory_ids, task_rows, seed):
        """TaskData of task ``k`` whose ``bias_rows`` (empty at task 0) are not in ``train``."""
        data = super().select(k, memory_ids, task_rows, seed)
        data.bias_rows = []
        new = {int(row["class_idx"]) for row in task_rows["train"][k]}
        by_class = {}
        for row in data.train:
            by_class.setdefault(int(row["class_idx"]), []).append(row)
        old = sorted(c for c in by_class if c not in new and len(by_class[c]) > 1)
        if not old:
            return data
        per_old = {c: min(len(by_class[c]) - 1, math.ceil(self.holdout * len(by_class[c]))) for c in old}
        per_new = max(1, round(float(np.mean(list(per_old.values())))))
        quota = {**per_old, **{c: min(per_new, len(by_class[c]) - 1) for c in new if c in by_class}}
        rng = np.random.RandomState(derive_seed(seed, k, "bic-holdout"))
        held = set()
        for c in sorted(quota):
            ids = sorted(row["ID"] for row in by_class[c])
            held.update(rng.choice(ids, size=quota[c], replace=False).tolist())
        data.bias_rows = [row for row in data.train if row["ID"] in held]
        data.train = [row for row in data.train if row["ID"] not in held]
        return data

    def __repr__(self):
        return f"BiCTaskData(valid_replay={self.valid_replay!r}, holdout={self.holdout})"


class BiasCorrection(torch.nn.Module):
    """Per-task affine correction of the logits: task ``j``'s classes ``o -> alpha_j * o + beta_j``.

    ``params`` [n_tasks, 2] holds (alpha_j, beta_j), (1, 0) at start: the identity.
    forward: logits [batch, n_classes] -> corrected logits [batch, n_classes].
    """

    def __init__(self, task_classes, n_classes):
        super().__init__()
        self.params = torch.nn.Parameter(torch.tensor([[1.0, 0.0]] * len(task_classes)), requires_grad=False)
        owner = torch.full((int(n_classes),), -1, dtype=torch.long)
        for j, classes in enumerate(task_classes):
            owner[list(classes)] = j
        self.register_buffer("owner", owner)

    def forward(self, logits):
        known = self.owner >= 0
        chosen = self.params[self.owner.clamp(min=0)]  # [n_classes, 2]
        alpha = torch.where(known, chosen[:, 0], torch.ones_like(chosen[:, 0]))
        beta = torch.where(known, chosen[:, 1], torch.zeros_like(chosen[:, 1]))
        return logits * alpha + beta


def fit_bias(logits, targets, new_classes, seen_classes):
    """The (alpha, beta) [2] minimising the cross-entropy over ``seen_classes`` of ``logits`` [n, n_classes]
    whose ``new_classes`` columns become ``alpha * o + beta`` (targets [n])."""
    logits, targets = logits.detach().float(), targets.long()
    new = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    new[list(new_classes)] = True
    seen = torch.zeros_like(new)
    seen[list(seen_classes)] = True
    ab = torch.tensor([1.0, 0.0], device=logits.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([ab], lr=1.0, max_iter=BIC_LBFGS_ITERATIONS, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        corrected = torch.where(new, logits * ab[0] + ab[1], logits).masked_fill(~seen, UNSEEN_LOGIT)
        loss = F.cross_entropy(corrected, targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    if not torch.isfinite(ab).all():
        raise FloatingPointError(f"BiC: the bias-correction fit diverged ({ab.tolist()})")
    return ab.detach()


class BiCBrain(SupervisedBrain):
    HPARAMS = {"save_folder": REQUIRED, "task_dir_format": "task{}", "eval_dataloader_opts": REQUIRED}

    bias_correction = None  # BiasCorrection, built at the first begin_task
    bias_rows = ()  # the held-out clips of the current task

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        if self.bias_correction is None:
            self.bias_correction = BiasCorrection(self.task_classes, self.hparams.n_classes).to(self.device)
        if self.task_id > 0:
            state = torch.load(os.path.join(self.task_dir(self.task_id - 1), BIC_FILE), map_location=self.device)
            self.bias_correction.params.data.copy_(state["params"])

    def prepare_task_data(self, task_dir, task_data):
        super().prepare_task_data(task_dir, task_data)
        self.bias_rows = list(getattr(task_data, "bias_rows", []))

    def compute_forward(self, batch, stage):
        """Corrected logits [batch, n_classes] (unseen classes masked with ``mask_unseen_classes``), mixup info."""
        emb, perm, lam = self.mixed_embeddings(batch, stage)
        logits = self.bias_correction(self.modules.classifier(emb))
        if self.hparams.mask_unseen_classes:
            logits = logits.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        return logits, perm, lam

    @torch.no_grad()
    def held_out_logits(self):
        """Logits [n, n_classes] (earlier tasks' corrections applied) and targets [n] of the held-out clips."""
        loader = sb.dataio.dataloader.make_dataloader(self.make_task_dataset(self.bias_rows, train=False),
                                                      **dict(self.hparams.eval_dataloader_opts))
        flags = {name: m.training for name, m in self.modules.items()}
        self.modules.eval()
        logits, targets = [], []
        for batch in loader:
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            logits.append(self.bias_correction(self.modules.classifier(self.embed(wavs, lens, sb.Stage.TEST))))
            targets.append(torch.as_tensor(batch.class_idx, dtype=torch.long, device=self.device))
        for name, module in self.modules.items():
            module.train(flags[name])
        return torch.cat(logits), torch.cat(targets)

    def end_task(self, task_dir, task_data):
        """Fit this task's (alpha, beta) on the held-out clips (task 0: the identity) and save every task's."""
        super().end_task(task_dir, task_data)
        if self.task_id > 0 and self.bias_rows:
            logits, targets = self.held_out_logits()
            self.bias_correction.params.data[self.task_id] = fit_bias(
                logits, targets, self.task_classes[self.task_id], self.seen_classes)
        if if_main_process():
            with atomic_path(os.path.join(task_dir, BIC_FILE)) as tmp:
                torch.save({"params": self.bias_correction.params.detach().cpu()}, tmp)
        sb.utils.distributed.ddp_barrier()

    def fit_report(self):
        report = dict(super().fit_report())
        if self.bias_correction is not None:
            report["bic_holdout_clips"] = len(self.bias_rows)
        return report
