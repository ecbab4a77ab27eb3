"""Learning-rate schedules stepped per batch, checkpointable."""
import logging
import math

import torch

from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class WarmupCosineLR:
    """Linear warm-up then cosine decay, one step per optimiser update.

    The length of the schedule is ``n_epochs * steps_per_epoch``, where
    ``steps_per_epoch`` is given at every call (the number of batches of the
    current task's training loader), so one YAML serves tasks of any size. The
    only state is the number of steps taken; it is checkpointed, so a resumed
    run continues the schedule where it stopped.

    Parameter groups of the optimiser flagged ``fixed_lr: True`` are held at
    ``base_lr`` (SimSiam's constant predictor learning rate).

    Arguments
    ---------
    base_lr : float
        Learning rate at the end of the warm-up.
    n_epochs : int
        Epochs of one task.
    warmup_epochs : float
        Epochs of linear warm-up from ``warmup_start_lr`` to ``base_lr``.
    final_lr : float
        Learning rate at the end of the cosine.
    warmup_start_lr : float
    """

    def __init__(self, base_lr, n_epochs, warmup_epochs=0, final_lr=0.0, warmup_start_lr=0.0):
        if n_epochs <= 0 or warmup_epochs < 0 or warmup_epochs > n_epochs:
            raise ValueError(f"need 0 <= warmup_epochs ({warmup_epochs}) <= n_epochs ({n_epochs}) and n_epochs > 0")
        self.base_lr = float(base_lr)
        self.n_epochs = n_epochs
        self.warmup_epochs = warmup_epochs
        self.final_lr = float(final_lr)
        self.warmup_start_lr = float(warmup_start_lr)
        self.n_steps = 0

    def lr_at(self, step, steps_per_epoch):
        """Learning rate of update number ``step`` (0-based)."""
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch} (empty training set?)")
        warmup = self.warmup_epochs * steps_per_epoch
        total = self.n_epochs * steps_per_epoch
        if step < warmup:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * step / warmup
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return self.final_lr + (self.base_lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, optimizer, steps_per_epoch):
        """Set the learning rate of the next update on ``optimizer``; return it."""
        lr = self.lr_at(self.n_steps, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = self.base_lr if group.get("fixed_lr") else lr
        self.n_steps += 1
        return lr

    @mark_as_saver
    def _save(self, path):
        torch.save({"n_steps": self.n_steps}, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        self.n_steps = int(torch.load(path)["n_steps"])
