"""TensorBoard scalars of a run (``use_tensorboard: True``), under ``<output_folder>/tensorboard/``.

Two sources, one SpeechBrain :class:`~speechbrain.utils.train_logger.TensorboardLogger`
per output folder:

* per epoch: the YAML's ``train_logger`` is wrapped in :class:`TeeTrainLogger`
  (by :func:`soundcl.core.recipe.load_hparams`), which forwards every ``log_stats``
  call to it and to TensorBoard: ``loss/train``, ``loss/valid``, ``acc/valid``,
  ``lr`` ... (step = epoch count across all tasks in this process);
* per task: :func:`soundcl.results.metrics.write_results`, called by the task loop after
  every task, calls :func:`log_results`: ``accuracy/task<j>`` (``R[k, j]``),
  ``A_k``, ``memory_update_s`` and, from the second task on, ``BWT``,
  ``BWT_all`` and ``forgetting``, each at step ``k`` (the task just finished).

Nothing is written for an output folder without :func:`enable`; tensorboard is
an optional extra (``pip install -e ".[tensorboard]"``). A resumed run writes a
new event file; the finished tasks' scalars are written again with the same
values and steps.
"""
import math
import os

from speechbrain.utils.train_logger import TrainLogger

TENSORBOARD_DIR = "tensorboard"

#: abspath(output_folder) -> TensorboardLogger
_LOGGERS = {}
#: abspath(output_folder) -> rows of the accuracy matrix already logged by this process
_LOGGED_ROWS = {}


def enable(output_folder):
    """The TensorboardLogger of ``output_folder`` (created once; ``<output_folder>/tensorboard/``)."""
    key = os.path.abspath(output_folder)
    if key not in _LOGGERS:
        try:
            from speechbrain.utils.train_logger import TensorboardLogger

            _LOGGERS[key] = TensorboardLogger(os.path.join(output_folder, TENSORBOARD_DIR))
        except ImportError as err:
            raise SystemExit(
                f"error: use_tensorboard=True needs tensorboard ({err}): pip install -e \".[tensorboard]\""
            ) from None
    return _LOGGERS[key]


def disable(output_folder):
    """Close and forget the logger of ``output_folder`` (tests)."""
    _LOGGED_ROWS.pop(os.path.abspath(output_folder), None)
    logger = _LOGGERS.pop(os.path.abspath(output_folder), None)
    if logger is not None and logger.writer is not None:
        logger.writer.close()


class TeeTrainLogger(TrainLogger):
    """Forwards ``log_stats`` to several train loggers (the YAML's file logger and TensorBoard)."""

    def __init__(self, *loggers):
        self.loggers = [logger for logger in loggers if logger is not None]

    def log_stats(self, stats_meta, train_stats=None, valid_stats=None, test_stats=None, verbose=True):
        for logger in self.loggers:
            logger.log_stats(stats_meta, train_stats=train_stats, valid_stats=valid_stats,
                             test_stats=test_stats, verbose=verbose)

    def __getattr__(self, name):  # e.g. FileTrainLogger.save_file
        if name == "loggers":
            raise AttributeError(name)
        return getattr(self.loggers[0], name)


def log_results(output_folder, results):
    """Per-task scalars of ``results`` (a results.json dict) if TensorBoard is enabled for the folder.

    The task loop writes the results after every task (the matrix so far) and
    once more at the end: only the rows not yet logged by this process are written.
    """
    key = os.path.abspath(output_folder)
    logger = _LOGGERS.get(key)
    if logger is None or logger.writer is None:
        return
    writer = logger.writer
    matrix = results["accuracy_matrix"]
    memory_times = results.get("memory_update_s") or []
    done = _LOGGED_ROWS.get(key, 0)
    for k in range(done, len(matrix)):
        for j, value in enumerate(matrix[k][: k + 1]):
            if value is not None:
                writer.add_scalar(f"accuracy/task{j}", value, k)
        a_k = results["acc_per_task"][k]
        if a_k is not None:
            writer.add_scalar("A_k", a_k, k)
        if k < len(memory_times) and memory_times[k] is not None:
            writer.add_scalar("memory_update_s", memory_times[k], k)
    if len(matrix) > done:
        for name in ("BWT", "BWT_all", "forgetting"):
            value = results.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                writer.add_scalar(name, value, len(matrix) - 1)
    _LOGGED_ROWS[key] = max(done, len(matrix))
    writer.flush()
