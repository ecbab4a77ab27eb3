"""What soundcl assumes of SpeechBrain's private methods (setup.py pins speechbrain>=1.1,<1.2).

SpeechBrain has no public hook for two things soundcl must change: how modules
are wrapped for DDP (it converts BatchNorm to SyncBatchNorm, which fails on CPU,
and wraps again at every fit) and which checkpoint folders exist (a half-written
one must be invisible). These tests fail when a SpeechBrain release moves them.
"""
import inspect

import speechbrain as sb
from speechbrain.utils.checkpoints import Checkpointer

from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.core.continual import ContinualBrain


def test_on_fit_start_wraps_modules_through_wrap_distributed():
    assert "self._wrap_distributed()" in inspect.getsource(sb.Brain.on_fit_start)
    assert ContinualBrain._wrap_distributed is not sb.Brain._wrap_distributed


def test_checkpoint_listing_goes_through_list_checkpoint_dirs(tmp_path):
    assert "_list_checkpoint_dirs()" in inspect.getsource(Checkpointer.list_checkpoints)
    assert hasattr(Checkpointer, "_custom_checkpoint_dirpath")
    # A checkpoint folder without the COMPLETE marker is invisible to recovery.
    checkpointer = SafeCheckpointer(str(tmp_path), recoverables={})
    saved = checkpointer.save_checkpoint(name="one")
    (saved.path / "COMPLETE").unlink()
    assert checkpointer.list_checkpoints() == []
