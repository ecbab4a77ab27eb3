"""Replay with a fixed-size episodic memory (the on-device recipe).

The method itself is the shared :class:`soundcl.task_loop.TaskLoop` with a
memory policy from :mod:`soundcl.memory`; this module adds the Brain (supervised
training with optional early stopping) and the cross-validation summary of
``recipes/replay_train.py``.
"""
import logging
import os

import numpy as np

import speechbrain as sb
from speechbrain.utils.epoch_loop import EpochCounter, EpochCounterWithStopper

from soundcl.brains import SupervisedBrain
from soundcl.atomic import write_json_atomic

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("A_last", "A_avg", "BWT", "forgetting")


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


class ReplayBrain(SupervisedBrain):
    """:class:`SupervisedBrain` whose epoch counter may stop a task early."""

    HPARAMS = {
        # Epochs without better validation accuracy before a task stops (null: never).
        "patience": None,
        # True: the whole run once per fold of cv_folds as test_fold; mean and std in
        # <cv_output_folder>/cv_results.json.
        "cross_validate": False,
    }

    def on_stage_end(self, stage, stage_loss, epoch=None):
        counter = self.hparams.epoch_counter
        if stage == sb.Stage.VALID and isinstance(counter, PatienceCounter):
            # Before the checkpoint is saved, so a resumed task knows its patience.
            counter.update_metric(self.stage_accuracy())
        super().on_stage_end(stage, stage_loss, epoch)


def cross_validation_summary(results_per_fold):
    """Mean and (population) std over folds of A_last, A_avg, BWT, forgetting."""
    summary = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in results_per_fold.values() if r.get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_fold": values}
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
