"""Class-balanced replay batches (``replay_batches: class_balanced``), for any ``sup_train`` strategy.

With a small memory the shuffled batches hold ~8 clips of an old class for every 64 of a new one;
here every training batch holds the classes of the task's training set (current task + memory)
in equal shares: ``batch_size // C`` clips of each of the ``C`` classes, the ``batch_size % C``
left over given to classes drawn at random for that batch. Within a class, clips come from a
reshuffled cycle over its clips (a memory class repeats its clips, a new class shows part of its
clips per epoch). An epoch has as many batches as the shuffled loader would (``drop_last``
honoured), all of ``batch_size`` clips; the draws are a pure function of (seed, task, epoch), so
a rerun or a resumed epoch sees the same batches. Under torchrun DDP every process builds the
same batches and takes every ``world_size``-th one.
"""
import math
import os

import numpy as np

import speechbrain as sb

from soundcl.base.contract import ConfigError
from soundcl.base.randomness import derive_seed

#: Values of ``replay_batches``.
REPLAY_BATCHES = ("shuffled", "class_balanced")


class ClassBalancedBatchSampler:
    """Batch sampler (lists of dataset indices) with equal class shares.

    Arguments
    ---------
    labels : list of int, the class of each dataset index
    batch_size : int
    n_batches : int, batches per epoch (all processes together)
    seed : int
    rank, world_size : int, this process and their count (DDP)
    """

    def __init__(self, labels, batch_size, n_batches, seed, rank=0, world_size=1):
        if int(batch_size) < 1 or not len(labels):
            raise ValueError(f"class-balanced batches need clips and batch_size >= 1, got {len(labels)} clips, "
                             f"batch_size {batch_size}")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(self.labels)
        self.batch_size, self.n_batches, self.seed = int(batch_size), int(n_batches), seed
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Called by SpeechBrain before every epoch."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(range(self.rank, self.n_batches, self.world_size))

    def batches(self):
        """Every process's batches of the epoch: a list of ``n_batches`` lists of indices."""
        rng = np.random.RandomState(derive_seed(self.seed, self.epoch))
        members = {c: np.flatnonzero(self.labels == c) for c in self.classes}
        cycles = {c: [] for c in self.classes}
        base, extra = divmod(self.batch_size, len(self.classes))
        out = []
        for _ in range(self.n_batches):
            lucky = set(rng.choice(self.classes, size=extra, replace=False).tolist()) if extra else set()
            batch = []
            for c in self.classes:
                for _ in range(base + (int(c) in lucky)):
                    if not cycles[c]:
                        cycles[c] = rng.permutation(members[c]).tolist()
                    batch.append(cycles[c].pop())
            out.append([int(i) for i in rng.permutation(batch)])
        return out

    def __iter__(self):
        return iter(self.batches()[self.rank::self.world_size])


class ClassBalancedBatches:
    """Mixin of a strategy's Brain: with ``replay_batches: class_balanced`` its training loader
    takes a :class:`ClassBalancedBatchSampler` (``Strategy.brain_class`` adds it)."""

    HPARAMS = {
        # shuffled: the task's clips and the memory shuffled together (published); class_balanced:
        # every batch holds each class of the training set in equal shares (soundcl.methods.supervised.balanced).
        "replay_batches": "shuffled",
        "seed": None,
    }

    def make_dataloader(self, dataset, stage, *args, **loader_kwargs):
        if stage == sb.Stage.TRAIN and self.hparams.replay_batches == "class_balanced":
            labels = [int(dataset.data[i]["class_idx"]) for i in dataset.data_ids]
            batch_size = int(loader_kwargs.pop("batch_size", 1))
            loader_kwargs.pop("shuffle", None)
            drop_last = bool(loader_kwargs.pop("drop_last", False))
            n_batches = len(labels) // batch_size if drop_last else math.ceil(len(labels) / batch_size)
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            self.train_sampler = ClassBalancedBatchSampler(
                labels, batch_size, max(n_batches, world), derive_seed(self.hparams.seed, self.task_id, "balanced"),
                rank=rank, world_size=world)
            loader_kwargs["batch_sampler"] = self.train_sampler
        return super().make_dataloader(dataset, stage, *args, **loader_kwargs)


def with_balanced_batches(brain, hparams):
    """``brain`` (a Brain class), with :class:`ClassBalancedBatches` in front for ``replay_batches: class_balanced``."""
    choice = str(hparams.get("replay_batches", "shuffled"))
    if choice not in REPLAY_BATCHES:
        raise ConfigError(f"replay_batches={choice!r} is not valid: expected one of {', '.join(REPLAY_BATCHES)}")
    if choice == "shuffled":
        return brain
    return type(brain.__name__, (ClassBalancedBatches, brain), {"__module__": brain.__module__})
