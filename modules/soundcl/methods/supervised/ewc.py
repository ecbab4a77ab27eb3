"""Online EWC (Schwarz et al. 2018, "Progress & Compress"; Mammoth's ewc_on).

Loss: cross-entropy over the seen classes + ``ewc_lambda`` x sum_i F_i (theta_i - theta*_i)^2
(Mammoth's form, no 1/2). At the end of each task (its best weights loaded), the
diagonal Fisher of the task is estimated on the task's own training clips
(full clips, model in eval mode, one clip at a time) as the mean squared gradient
of log p(label | clip): the *empirical* Fisher, with the true labels. It is
accumulated as F <- ewc_gamma * F + F_task, and the anchor theta* is the task's
final weights; both are written atomically to ``save/task<k>/ewc.pt`` and
reloaded at the next task's ``begin_task``, so a resumed run is exact.
Under torchrun DDP each process estimates the Fisher on its shard of the clips and the
sums are all-reduced (:func:`soundcl.core.ddp.mean_over_processes`): every process
holds the mean over all clips; the main process writes the file.
"""
import os

import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.base.atomic import atomic_path
from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.base.contract import REQUIRED
from soundcl.core.ddp import mean_over_processes, shard, unwrap, unwrapped
from speechbrain.utils.distributed import if_main_process

EWC_FILE = "ewc.pt"


class EWCBrain(SupervisedBrain):
    HPARAMS = {"ewc_lambda": REQUIRED, "ewc_gamma": REQUIRED, "save_folder": REQUIRED, "task_dir_format": "task{}"}

    fisher = None  # name -> accumulated diagonal Fisher (None before the first task ends)
    anchor = None  # name -> weights at the end of the previous task

    def named_weights(self):
        """``{module.parameter: tensor}`` of every trainable parameter (names without a DDP wrapper's)."""
        return {f"{m}.{n}": p for m, module in self.modules.items()
                for n, p in unwrap(module).named_parameters() if p.requires_grad}

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.fisher = self.anchor = None
        if self.task_id > 0:
            state = torch.load(os.path.join(self.task_dir(self.task_id - 1), EWC_FILE), map_location=self.device)
            self.fisher, self.anchor = state["fisher"], state["anchor"]

    def penalty(self):
        """sum_i F_i (theta_i - theta*_i)^2 (0 before the first task ends)."""
        if self.fisher is None:
            return torch.zeros((), device=self.device)
        weights = self.named_weights()
        return sum(((self.fisher[n] * (weights[n] - self.anchor[n]) ** 2).sum() for n in self.fisher),
                   torch.zeros((), device=self.device))

    def compute_objectives(self, predictions, batch, stage):
        loss = super().compute_objectives(predictions, batch, stage)
        if stage == sb.Stage.TRAIN and self.fisher is not None:
            loss = loss + self.hparams.ewc_lambda * self.penalty()
        return loss

    def end_task(self, task_dir, task_data):
        current = set(self.task_classes[self.task_id])
        rows = [row for row in task_data.train if int(row["class_idx"]) in current]  # not the replayed clips
        fisher = self.estimate_fisher(rows)
        if self.fisher is not None:
            fisher = {n: self.hparams.ewc_gamma * self.fisher[n] + f for n, f in fisher.items()}
        anchor = {n: p.detach().clone() for n, p in self.named_weights().items()}
        if if_main_process():
            with atomic_path(os.path.join(task_dir, EWC_FILE)) as tmp:
                torch.save({"fisher": {n: f.cpu() for n, f in fisher.items()},
                            "anchor": {n: a.cpu() for n, a in anchor.items()}}, tmp)
        sb.utils.distributed.ddp_barrier()

    def estimate_fisher(self, rows):
        """Mean over ``rows`` of the squared gradients of log p(label | clip), one clip at a time.

        Under DDP each process takes its shard of ``rows``; the sums are all-reduced.
        The modules run unwrapped (DDP would try to synchronise these gradients).
        """
        weights = self.named_weights()
        fisher = {n: torch.zeros_like(p) for n, p in weights.items()}
        mine = shard(rows)
        loader = sb.dataio.dataloader.make_dataloader(self.make_task_dataset(mine, train=False), batch_size=1)
        flags = {name: m.training for name, m in self.modules.items()}
        self.modules.eval()
        try:
            with unwrapped(self.modules):
                for batch in loader:
                    batch = batch.to(self.device)
                    wavs, lens = batch.sig
                    emb = self.modules.embedding_model(self.compute_feats(wavs, lens, sb.Stage.TEST), lens)
                    logits = self.modules.classifier(emb).masked_fill(~self.seen_mask(self.device), UNSEEN_LOGIT)
                    target = torch.as_tensor(batch.class_idx, dtype=torch.long, device=self.device)
                    log_likelihood = -F.cross_entropy(logits.float(), target)
                    grads = torch.autograd.grad(log_likelihood, list(weights.values()), allow_unused=True)
                    for n, g in zip(weights, grads):
                        if g is not None:
                            fisher[n] += g.detach() ** 2
        finally:
            for name, module in self.modules.items():
                module.train(flags[name])
        return mean_over_processes(fisher, len(mine))
