"""A SpeechBrain Checkpointer that never loads a half-written checkpoint.

SpeechBrain writes a checkpoint's meta file first and its parameter files
after; a process killed in between leaves a folder that looks complete. Here a
``COMPLETE`` marker is written once every file is on disk, and folders without
it are invisible: recovery falls back to the previous good checkpoint.
"""
import logging
import shutil

from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"


class SafeCheckpointer(Checkpointer):
    """Checkpointer whose checkpoints exist only once fully written."""

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        if name is not None and if_main_process():
            stale = self._custom_checkpoint_dirpath(name)
            if stale.exists() and not (stale / COMPLETE_MARKER).exists():
                shutil.rmtree(stale)  # left by a process killed while writing it
        ckpt = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity)
        if ckpt is not None:  # main process
            (ckpt.path / COMPLETE_MARKER).touch()
        # Other processes must not list checkpoints before the marker exists:
        # they would see another set than the main process and the collective
        # calls of delete_checkpoints would no longer pair up (a hang).
        ddp_barrier()
        return ckpt

    def _list_checkpoint_dirs(self):
        dirs = super()._list_checkpoint_dirs()
        complete = [d for d in dirs if (d / COMPLETE_MARKER).exists()]
        for incomplete in sorted(set(dirs) - set(complete)):
            logger.warning("ignoring incomplete checkpoint %s (its writer was interrupted)", incomplete)
        return complete
