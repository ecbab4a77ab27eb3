"""The Brain base class that the shared task loop (:mod:`soundcl.core.task_loop`) drives.

A method is a subclass: it implements ``compute_forward`` /
``compute_objectives`` / ``on_stage_end`` as any SpeechBrain Brain, declares
the hparams it reads in ``HPARAMS`` (:mod:`soundcl.base.contract`), and may
override the task hooks ``begin_task``, ``prepare_task_data``,
``make_task_dataset``, ``end_task``, ``before_testing`` and ``evaluate_accuracy``.
"""
import logging
import os

import torch

import speechbrain as sb
from torchmetrics.functional.classification import multiclass_accuracy

from soundcl.results import metrics
from soundcl.data.audio import make_dataset
from soundcl.base.contract import REQUIRED
from soundcl.base.randomness import derive_seed, seed_everything

logger = logging.getLogger(__name__)


class ContinualBrain(sb.Brain):
    """Brain that knows which task it is in and which classes it has seen.

    Subclasses implement ``compute_forward`` / ``compute_objectives`` as usual
    and record predictions (``self.targets`` / ``self.predictions``)
    in VALID and TEST stages; this class turns them into accuracies.

    """

    HPARAMS = {
        "seed": REQUIRED,
        "n_classes": REQUIRED,
        "audio": REQUIRED,  # a soundcl.data.audio.AudioPipeline
        # batch: a clip shorter than a training crop stays whole, padded by the batch (cssl_sound's);
        # dataset: zero-padded to the crop in the data set (ASC-CL's); passed to `audio` by the YAML.
        "pad_short_crops": REQUIRED,
        "epoch_counter": REQUIRED,
    }

    #: Validation statistic that selects the best checkpoint of a task, and
    #: whether larger is better.
    best_key = ("acc", "max")

    #: Independent training crops per clip (2 for two-view SSL); the recipe
    #: builds training sets with this many views (``sig``, ``sig_view1`` ...).
    n_train_views = 1

    #: Why this Brain's test cannot score a task before it is trained (forward transfer, the
    #: model before task 0); None: it can (its test scores every class of the head).
    future_eval_unsupported = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.task_id = 0
        self.seen_classes = []
        self.task_classes = None  # classes of every task, set by the task loop
        self.last_stage_stats = {}
        self.batch_ids = []  # clips of the current training batch, named if its loss is not finite
        # Classes of the task whose test set is scored (set by the loop): record_predictions then
        # also keeps the task-incremental predictions (argmax over these classes only).
        self.eval_task_classes = None
        self.til_predictions = []

    # ------------------------------------------------------------------ tasks
    def begin_task(self, task_id, seen_classes):
        """Called by the task loop before fitting task ``task_id``."""
        self.task_id = int(task_id)
        self.seen_classes = sorted(int(c) for c in seen_classes)

    def prepare_task_data(self, task_dir, task_data):
        """Called by the task loop once task ``task_id``'s clips are chosen, before fitting.

        ``task_data`` is the :class:`TaskData` of the task (training,
        validation and test rows); ``task_dir`` its folder. A Brain may
        precompute per-clip tensors here (e.g. frozen-encoder embeddings).
        The default does nothing.
        """

    def end_task(self, task_dir, task_data):
        """Called by the task loop once the task's best weights are loaded and kept
        as ``CKPT+final`` in ``task_dir``, before testing. A Brain may save
        what the next task needs there (e.g. EWC's Fisher). The default does nothing.
        """

    def attach_memory(self, memory):
        """Called by the recipe with the memory policy the task loop will use, before it runs. A Brain
        that updates the memory during a task (online mode, :mod:`soundcl.methods.supervised.online`)
        keeps it; the default does nothing (the loop alone updates the memory, after each task)."""

    def fit_report(self):
        """Statistics of the last ``fit`` for the task's ``per_task`` entry in results.json
        (e.g. the replay recipe's best test epoch); the default has none."""
        return {}

    def test_report(self):
        """Statistics of the last tests for the task's ``per_task`` entry in results.json (e.g. the
        DCASE domain baseline's domain selection); the default has none."""
        return {}

    def task_dir(self, task_id):
        """The folder of task ``task_id``'s checkpoints (as the task loop names it)."""
        return os.path.join(self.hparams.save_folder, self.hparams.task_dir_format.format(task_id))

    def make_task_dataset(self, rows, train):
        """The data set the loop trains or tests on: waveforms (``sig``; ``sig_view1`` ... for
        ``n_train_views`` > 1 in training), ``class_idx``, ``id``."""
        return make_dataset(rows, self.hparams.audio, train, n_views=self.n_train_views if train else 1)

    def parameter_groups(self):
        """Optimizer parameter groups (list of dicts); one group of every trainable parameter by default."""
        return [{"params": [p for p in self.modules.parameters() if p.requires_grad]}]

    def init_optimizers(self):
        """One optimizer over :meth:`parameter_groups` (methods with several learning rates override those)."""
        if self.opt_class is None:
            return
        self.optimizer = self.opt_class(self.parameter_groups())
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def seen_mask(self, device):
        """Boolean mask [n_classes] of the classes seen up to the current task."""
        mask = torch.zeros(self.hparams.n_classes, dtype=torch.bool, device=device)
        mask[self.seen_classes] = True
        return mask

    def _wrap_distributed(self):
        """DDP-wrap trainable modules once, and keep plain BatchNorm on CPU.

        SpeechBrain converts BatchNorm to SyncBatchNorm, which only runs on
        GPUs (so gloo/CPU training would fail), and it would wrap the modules
        again at every ``fit``, i.e. at every task. SpeechBrain has no public
        hook for this: setup.py pins the SpeechBrain range and
        tests/test_speechbrain_assumptions.py checks that ``on_fit_start`` calls it.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = str(self.device).startswith("cuda")
        for name, module in self.modules.items():
            if isinstance(module, DistributedDataParallel) or not any(p.requires_grad for p in module.parameters()):
                continue
            if on_gpu:
                module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            self.modules[name] = DistributedDataParallel(
                module,
                device_ids=[self.device] if on_gpu else None,
                find_unused_parameters=self.find_unused_parameters,
            )

    def on_evaluate_start(self, max_key=None, min_key=None):
        # SpeechBrain would reload a checkpoint before every test set; the
        # task loop has already loaded the task's final weights.
        pass

    # ------------------------------------------------------------- stages
    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            # step > 0 means a mid-epoch checkpoint was just recovered, with
            # its RNG state: reseeding would change the rest of the epoch.
            epoch_seed = derive_seed(self.hparams.seed, self.task_id, epoch)
            if self.step == 0:
                seed_everything(epoch_seed)
            self.hparams.audio.set_crop_seed(epoch_seed)
        self.targets = []
        self.predictions = []
        self.til_predictions = []

    def fit_batch(self, batch):
        self.batch_ids = list(batch.id)
        try:
            return super().fit_batch(batch)
        except ValueError as err:
            if len(self.batch_ids) == 1 and "Expected more than 1 value per channel" in str(err):
                # torch's message names neither the batch nor the cure.
                raise ValueError(
                    f"task {self.task_id}: a training batch of one clip ({self.batch_ids[0]}) reached a "
                    f"BatchNorm layer, which needs 2 or more (the last batch of an epoch: training clips % "
                    f"batch_size == 1): set drop_last: True in train_dataloader_opts or change batch_size"
                ) from err
            raise

    def check_loss_isfinite(self, loss):
        if not torch.isfinite(loss):
            logger.warning(
                "non-finite loss (%s) in task %d, batch of clips: %s",
                float(loss), self.task_id, ", ".join(self.batch_ids),
            )
        super().check_loss_isfinite(loss)

    def record_predictions(self, logits, targets):
        """Accumulate accuracy statistics of a batch.

        logits [batch, n_classes] (unseen classes already masked), targets [batch].
        """
        self.targets.extend(targets.tolist())
        self.predictions.extend(logits.argmax(dim=-1).tolist())
        if self.eval_task_classes is not None:
            self.til_predictions.extend(metrics.task_il_predictions(logits, self.eval_task_classes).tolist())

    def task_il_accuracy(self):
        """Task-incremental accuracy of this stage's predictions (argmax over ``eval_task_classes``),
        or None when the test path recorded none (a Brain scoring without :meth:`record_predictions`)."""
        if not self.targets or len(self.til_predictions) != len(self.targets):
            return None
        correct = sum(int(p == t) for p, t in zip(self.til_predictions, self.targets))
        return correct / len(self.targets)

    def stage_accuracy(self):
        """Accuracy of the predictions recorded in this stage (0 when none)."""
        if not self.targets:
            return 0.0
        return float(multiclass_accuracy(torch.tensor(self.predictions), torch.tensor(self.targets),
                                         num_classes=self.hparams.n_classes, average="micro"))

    def before_testing(self, train_rows, loader_kwargs):
        """Called by the task loop before it scores the test sets of tasks ``0..k``.

        ``train_rows``: the training rows of tasks ``0..k`` (all of them, not only
        the memory), for Brains whose scoring needs reference data (e.g. kNN).
        The default does nothing.
        """

    def evaluate_accuracy(self, dataset, loader_kwargs):
        """Accuracy and confusion matrix of the current model on ``dataset``."""
        # SpeechBrain edits the loader kwargs it is given: pass a copy.
        self.evaluate(dataset, progressbar=not self.noprogressbar, test_loader_kwargs=dict(loader_kwargs))
        confusion = metrics.confusion_matrix(self.targets, self.predictions, self.hparams.n_classes)
        return self.stage_accuracy(), confusion
