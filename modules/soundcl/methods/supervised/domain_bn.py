"""The DCASE 2026 domain-agnostic incremental baseline: domain BatchNorm + minimum-entropy selection.

Domain-incremental only (``task_domains``; ``strategy: dcase_domain_bn``). Every
BatchNorm layer of the ``embedding_model`` becomes one set per task (domain group)
(:mod:`soundcl.models.domain_bn`); convolutions and classifier are shared. Task ``k``
trains with set ``k``, initialised from set ``k-1``. ``domain_bn_shared``: ``frozen``
(default) trains the shared weights and the input normaliser on the first domain only,
later tasks learn their BatchNorm set alone (earlier domains' predictions with their own
set are then exactly kept); ``trained`` fine-tunes them with every domain too.

Test (row ``k`` of the accuracy matrix): the domain of a clip is unknown, so each clip
is classified with every set ``0..k`` and the set whose softmax has the lowest entropy
gives the prediction. Beside it, per tested task ``j``: the domain-selection accuracy
(chosen set == ``j``) and the oracle-domain accuracy (set ``j`` for every clip), in
``per_task[k]["domain_selection"]`` of results.json. Assumptions where the task
description was not available: docs/fidelity.md ("DCASE 2026 domain-incremental baseline").
"""
import numpy as np
import torch

import speechbrain as sb

from soundcl.base.contract import ConfigError
from soundcl.core.brains import UNSEEN_LOGIT, SupervisedBrain
from soundcl.models.domain_bn import (convert_batchnorm, copy_domain, domain_batchnorms, domain_parameters, pick,
                                      select_by_entropy, set_domain)

#: Values of ``domain_bn_shared``.
SHARED_MODES = ("frozen", "trained")


class DomainBNBrain(SupervisedBrain):
    # task_domains: declared by the strategies (null: class-incremental, refused for this one).
    HPARAMS = {"domain_bn_shared": "frozen", "recalibrate_bn_clips": 0}
    #: The TEST-stage compute_forward selects the BatchNorm set per clip (minimum entropy) and gives
    #: the scores; evaluate_accuracy only adds the selection report: soundcl.inference serves it.
    SCORES_IN_COMPUTE_FORWARD = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.hparams.domain_bn_shared not in SHARED_MODES:
            raise ConfigError(f"domain_bn_shared={self.hparams.domain_bn_shared!r} is not valid: expected one of "
                              f"{', '.join(SHARED_MODES)}")
        if self.hparams.recalibrate_bn_clips:
            raise ConfigError("recalibrate_bn_clips > 0 would reset every domain's BatchNorm statistics: set it to 0 "
                              "with strategy=dcase_domain_bn")
        self.n_domains = len(self.hparams.task_domains)
        if not domain_batchnorms(self.modules.embedding_model) and not convert_batchnorm(
                self.modules.embedding_model, self.n_domains):
            raise ConfigError("strategy=dcase_domain_bn needs BatchNorm layers in the embedding_model "
                              "(e.g. emb_norm_type: bn)")
        self.true_domain = {}  # test clip id -> index of its task (domain group)
        self.selection = []
        self.domain_selection = []  # per tested task of the current row

    # ------------------------------------------------------------------ tasks
    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        model = self.modules.embedding_model
        if self.task_id > 0:
            copy_domain(model, self.task_id - 1, self.task_id)
        set_domain(model, self.task_id)
        shared = self.task_id == 0 or self.hparams.domain_bn_shared == "trained"
        for module in self.modules.values():
            module.requires_grad_(shared)
        for domain in range(self.n_domains):
            for param in domain_parameters(model, domain):
                param.requires_grad_(domain == self.task_id)
        self.domain_selection = []

    def prepare_task_data(self, task_dir, task_data):
        super().prepare_task_data(task_dir, task_data)
        self.true_domain = {row["ID"]: j for j, rows in task_data.test.items() for row in rows}

    def compute_feats(self, wavs, lens, stage, augment=True):
        """As the front end's, with the input normaliser kept fixed once the shared weights are."""
        norm = self.modules.mean_var_norm
        fixed = norm.training and self.task_id > 0 and self.hparams.domain_bn_shared == "frozen"
        if fixed:
            norm.eval()
        try:
            return super().compute_feats(wavs, lens, stage, augment)
        finally:
            if fixed:
                norm.train()

    # ------------------------------------------------------------------ test
    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.selection = []

    def compute_forward(self, batch, stage):
        if stage != sb.Stage.TEST:
            return super().compute_forward(batch, stage)
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        feats = self.compute_feats(wavs, lens, stage)
        model = self.modules.embedding_model
        per_set = []
        for domain in range(self.task_id + 1):
            set_domain(model, domain)
            per_set.append(self.modules.classifier(model(feats, lens)))
        set_domain(model, self.task_id)
        per_set = torch.stack(per_set).masked_fill(~self.seen_mask(feats.device), UNSEEN_LOGIT)
        chosen = select_by_entropy(per_set)
        true = torch.tensor([self.true_domain.get(i, -1) for i in batch.id], device=feats.device)
        oracle = pick(per_set, true.clamp(min=0, max=self.task_id))
        self.selection.append((chosen.cpu(), true.cpu(), oracle.argmax(-1).cpu()))
        return pick(per_set, chosen), None, 1.0

    def evaluate_accuracy(self, dataset, loader_kwargs):
        accuracy, confusion = super().evaluate_accuracy(dataset, loader_kwargs)
        chosen = torch.cat([c for c, _, _ in self.selection]).numpy()
        true = torch.cat([t for _, t, _ in self.selection]).numpy()
        oracle = torch.cat([o for _, _, o in self.selection]).numpy()
        targets = np.asarray(self.targets)
        known = true >= 0
        self.domain_selection.append({
            "task": int(np.bincount(true[known]).argmax()) if known.any() else None,
            "accuracy_selected": float(accuracy),
            "selection_accuracy": float(np.mean(chosen[known] == true[known])) if known.any() else None,
            "accuracy_oracle": float(np.mean(oracle[known] == targets[known])) if known.any() else None,
            "chosen_sets": np.bincount(chosen, minlength=self.task_id + 1).tolist(),
        })
        return accuracy, confusion

    def test_report(self):
        rows = self.domain_selection

        def mean(key):
            values = [r[key] for r in rows if r[key] is not None]
            return float(np.mean(values)) if values else None

        return {"domain_selection": {
            "tested_tasks": [r["task"] for r in rows],
            "accuracy_selected": [r["accuracy_selected"] for r in rows],
            "selection_accuracy": [r["selection_accuracy"] for r in rows],
            "accuracy_oracle": [r["accuracy_oracle"] for r in rows],
            "chosen_sets": [r["chosen_sets"] for r in rows],
            "mean_accuracy_selected": mean("accuracy_selected"),
            "mean_selection_accuracy": mean("selection_accuracy"),
            "mean_accuracy_oracle": mean("accuracy_oracle"),
        }}
