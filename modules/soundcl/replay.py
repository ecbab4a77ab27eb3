"""Replay with a fixed-size episodic memory (the on-device recipe).

The method itself is the shared :class:`soundcl.continual.TaskLoop` with a
memory policy from :mod:`soundcl.memory`; this module adds the Brain (supervised
training with optional early stopping) and the cross-validation driver of
``recipes/replay_train.py``.
"""
import json
import logging
import os
import sys

import numpy as np
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb
from speechbrain.utils.epoch_loop import EpochCounter, EpochCounterWithStopper

from soundcl.brains import SupervisedBrain
from soundcl.recipe import main

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

    def on_stage_end(self, stage, stage_loss, epoch=None):
        counter = self.hparams.epoch_counter
        if stage == sb.Stage.VALID and hasattr(counter, "update_metric"):
            # Before the checkpoint is saved, so a resumed task knows its patience.
            counter.update_metric(self.stage_accuracy())
        super().on_stage_end(stage, stage_loss, epoch)


def _without_option(argv, name):
    return [a for a in argv if not (a == f"--{name}" or a.startswith(f"--{name}="))]


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


def run(argv=None):
    """Entry point of ``recipes/replay_train.py``.

    With ``cross_validate: True`` the whole run is repeated for every fold of
    ``cv_folds`` as ``test_fold``; the mean and std over folds go to
    ``<cv_output_folder>/cv_results.json``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if not hparams.get("cross_validate", False):
        return main(ReplayBrain, argv)

    folds = hparams.get("cv_folds")
    if not folds:
        raise ValueError(f"cross_validate=True needs the list cv_folds in {hparams_file}")
    base_argv = _without_option(argv, "test_fold")
    per_fold = {}
    for fold in folds:
        logger.info("=== cross-validation: test fold %s ===", fold)
        per_fold[str(fold)] = main(ReplayBrain, base_argv + [f"--test_fold={fold}"])
    summary = {"folds": [str(f) for f in folds], **cross_validation_summary(per_fold)}
    os.makedirs(hparams["cv_output_folder"], exist_ok=True)
    path = os.path.join(hparams["cv_output_folder"], "cv_results.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(path + ".tmp", path)
    logger.info(
        "cross-validation over folds %s: %s (results in %s)", folds,
        ", ".join(f"{k} {100 * summary[k]['mean']:.1f} +- {100 * summary[k]['std']:.1f}" for k in SUMMARY_KEYS if k in summary),
        path,
    )
    return summary
