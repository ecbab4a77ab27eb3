"""Seeds derived from ``(seed, task, epoch)``, and RNG states saved in checkpoints.

Randomness is derived rather than carried along, so a rerun that skips
finished tasks draws exactly what an uninterrupted run draws.
"""
import random
import zlib

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.seed import seed_everything as _sb_seed_everything


def derive_seed(*parts):
    """A 31-bit seed that is a pure function of ``parts`` (ints or strings)."""
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def seed_everything(seed):
    """Seed python, numpy and torch (all devices) with ``seed`` (SpeechBrain's, quietly)."""
    _sb_seed_everything(seed, verbose=False)


# Hand-written: speechbrain.utils.repro.SaveableGenerator saves torch generators
# only, and a mid-epoch resume must also continue python's and numpy's draws.
@register_checkpoint_hooks
class RandomState:
    """Checkpointable global RNG states, so a mid-epoch resume continues the same draws."""

    @mark_as_saver
    def save(self, path):
        torch.save(
            {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            path,
        )

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        state = torch.load(path, weights_only=False)
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
