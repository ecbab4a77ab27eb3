"""Replay with a fixed-size episodic memory (the on-device recipe).

The method itself is the shared :class:`soundcl.core.task_loop.TaskLoop` with a
memory policy from :mod:`soundcl.memory.policies`; this module adds the Brain (supervised
training with optional early stopping) and the cross-validation summary of
``recipes/replay_train.py``.
"""
import json
import logging
import os

import numpy as np
import torch

import speechbrain as sb
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.epoch_loop import EpochCounter, EpochCounterWithStopper

from soundcl.core.brains import SupervisedBrain
from soundcl.base.contract import REQUIRED
from soundcl.base.atomic import write_json_atomic

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("A_last", "A_avg", "BWT", "BWT_ascl", "forgetting")


class PatienceCounter(EpochCounterWithStopper):
    """Epoch counter that stops once validation accuracy has not *strictly*
    improved for ``patience`` epochs (SpeechBrain's stopper counts an equal
    value as an improvement, so a plateau, e.g. at 100 %, would never stop)."""

    def __init__(self, limit, patience):
        super().__init__(limit, limit_to_stop=int(patience), limit_warmup=0, direction="max")

    def update_metric(self, current_metric):
        if current_metric > self.best_score + 1e-9:
            self.best_score, self.best_limit = float(current_metric), self.current
        self.should_stop = self.current - self.best_limit >= self.limit_to_stop
        if self.should_stop:
            logger.info("no better validation accuracy for %d epochs: task stops early", self.limit_to_stop)


def make_epoch_counter(limit, patience=None):
    """An epoch counter; with ``patience`` (epochs), one that stops a task once
    validation accuracy has not improved for ``patience`` epochs."""
    if patience in (None, 0, "null", "None"):
        return EpochCounter(limit)
    if int(patience) < 0:
        raise ValueError(f"patience must be >= 1 (or null), got {patience}")
    return PatienceCounter(limit, patience)


#: ASC-CL stops a task once its test accuracy has not improved for this many epochs.
ASCCL_TEST_PATIENCE = 7


@register_checkpoint_hooks
class EpochTestAccuracy:
    """Pooled test accuracy (clips of tasks 0..k together) after each epoch of one task,
    checkpointed with the task so that a resumed task keeps the earlier epochs."""

    def __init__(self):
        self.per_epoch = {}  # str(epoch) -> accuracy

    def record(self, epoch, accuracy):
        self.per_epoch[str(int(epoch))] = float(accuracy)

    def best(self, patience=ASCCL_TEST_PATIENCE):
        """ASC-CL's number: the best epoch seen before the test accuracy has not
        (strictly) improved for ``patience`` epochs. -> dict or None without epochs."""
        epochs = sorted(self.per_epoch, key=int)
        if not epochs:
            return None
        best_acc, best_epoch, waited = 0.0, int(epochs[0]), 0
        for e in epochs:
            acc = self.per_epoch[e]
            if acc > best_acc:
                best_acc, best_epoch, waited = acc, int(e), 0
            else:
                waited += 1
                if waited >= patience:
                    break
        return {"acc": best_acc, "epoch": best_epoch, "test_patience": patience,
                "acc_per_epoch": [self.per_epoch[e] for e in epochs]}

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.per_epoch, f)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        with open(path, encoding="utf-8") as f:
            self.per_epoch = {str(k): float(v) for k, v in json.load(f).items()}


class ReplayBrain(SupervisedBrain):
    """:class:`SupervisedBrain` whose epoch counter may stop a task early and which,
    with ``report_best_test_epoch``, also tests every epoch on the test clips of tasks
    0..k (ASC-CL's model selection, reported beside the validation-selected matrix)."""

    HPARAMS = {
        # Epochs without better validation accuracy before a task stops (null: never).
        "patience": None,
        # True: the whole run once per fold of cv_folds as test_fold; mean and std in
        # <cv_output_folder>/cv_results.json.
        "cross_validate": False,
        # True: after every epoch, also the accuracy on the pooled test clips of tasks 0..k;
        # results.json then has "best_test_epoch" (ASC-CL's published protocol: the best
        # test epoch of each task). The matrix stays validation-selected.
        "report_best_test_epoch": False,
        "eval_dataloader_opts": REQUIRED,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_test_rows = []
        self.test_per_epoch = None
        self.best_test_epoch = None  # of the last task fitted

    def prepare_task_data(self, task_dir, task_data):
        super().prepare_task_data(task_dir, task_data)
        self.best_test_epoch = None
        if not self.hparams.report_best_test_epoch:
            self.test_per_epoch = None
            return
        self.epoch_test_rows = [row for j in task_data.test_tasks for row in task_data.test[j]]
        self.test_per_epoch = EpochTestAccuracy()
        self.checkpointer.add_recoverable("test_accuracy_per_epoch", self.test_per_epoch)

    def fit(self, *args, **kwargs):
        super().fit(*args, **kwargs)
        # Now, before the task loop reloads the best-validation checkpoint (and its older record).
        if self.test_per_epoch is not None:
            self.best_test_epoch = self.test_per_epoch.best()

    def fit_report(self):
        """Per-task statistics for results.json (the task loop's ``per_task`` entries)."""
        return {} if self.best_test_epoch is None else {"best_test_epoch": self.best_test_epoch}

    @torch.no_grad()
    def pooled_test_accuracy(self):
        """Accuracy of the current weights on the test clips of tasks 0..k together."""
        loader = sb.dataio.dataloader.make_dataloader(
            self.make_task_dataset(self.epoch_test_rows, train=False), **dict(self.hparams.eval_dataloader_opts))
        flags = {name: m.training for name, m in self.modules.items()}
        self.modules.eval()
        correct = total = 0
        for batch in loader:
            logits = self.compute_forward(batch, sb.Stage.TEST)[0]
            targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
            correct += int((logits.argmax(-1) == targets).sum())
            total += int(targets.numel())
        for name, module in self.modules.items():
            module.train(flags[name])
        return correct / max(1, total)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        counter = self.hparams.epoch_counter
        if stage == sb.Stage.VALID and isinstance(counter, PatienceCounter):
            # Before the checkpoint is saved, so a resumed task knows its patience.
            counter.update_metric(self.stage_accuracy())
        if stage == sb.Stage.VALID and self.test_per_epoch is not None:
            self.test_per_epoch.record(epoch, self.pooled_test_accuracy())
        super().on_stage_end(stage, stage_loss, epoch)


def cross_validation_summary(results_per_fold):
    """Mean and (population) std over folds of A_last, A_avg, BWT, BWT_ascl, forgetting
    (and of the best-test-epoch numbers, where every fold has them)."""
    summary = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in results_per_fold.values() if r.get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_fold": values}
    published = [r["best_test_epoch"] for r in results_per_fold.values() if r.get("best_test_epoch")]
    if published and len(published) == len(results_per_fold):
        summary["best_test_epoch"] = {"selection": published[0]["selection"]}
        for key in ("A_last", "A_avg", "BWT_ascl"):
            values = [p[key] for p in published if p.get(key) is not None]
            if values:
                summary["best_test_epoch"][key] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                                                   "per_fold": values}
    update = [sum(t.get("memory_update_s", 0.0) for t in r["per_task"]) for r in results_per_fold.values()]
    summary["memory_update_s"] = {"mean": float(np.mean(update)), "std": float(np.std(update)), "per_fold": update}
    return summary


def write_cross_validation_summary(per_fold, folder):
    """Write ``<folder>/cv_results.json`` (mean and std over folds) and log it; returns the summary."""
    summary = {"folds": list(per_fold), **cross_validation_summary(per_fold)}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "cv_results.json")
    write_json_atomic(path, summary, indent=2)
    logger.info(
        "cross-validation over folds %s: %s (results in %s)", list(per_fold),
        ", ".join(f"{k} {100 * summary[k]['mean']:.1f} +- {100 * summary[k]['std']:.1f}"
                  for k in SUMMARY_KEYS if k in summary),
        path,
    )
    return summary
