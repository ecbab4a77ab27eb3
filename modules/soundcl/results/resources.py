"""What a task costs: peak memory of the process (and of the GPU), the replay memory's bytes, update time.

Per-task peak RSS: Linux keeps the process's peak resident set (``VmHWM`` in
``/proc/self/status``) and resets it when ``5`` is written to ``/proc/self/clear_refs``
(Linux >= 4.0): :class:`PeakMeter` resets it when a task starts and reads it when the
task ends, so each task's peak is its own, at no cost during the task (no sampling
thread, no extra dependency: psutil is not one of soundcl's). Where the reset is not
possible (another OS, a locked-down ``/proc``), the peak is ``getrusage``'s
``ru_maxrss``, the peak of the process's whole life so far, and ``peak_rss_scope`` says
``process`` instead of ``task``. The main process only: DataLoader workers
(``num_workers > 0``) are processes of their own. A task resumed after a kill has the
peak of the part run by the resuming process.

Peak GPU memory: ``torch.cuda.max_memory_allocated`` (tensors allocated by torch,
not the caching allocator's reserve), reset when the task starts; ``None`` without CUDA.
"""
import resource
import sys
import time

import torch

CLEAR_REFS = "/proc/self/clear_refs"
STATUS = "/proc/self/status"
#: Bytes per stored value: the memory holds decoded float32 audio.
BYTES_PER_VALUE = 4


def audio_nbytes(ids, rows_by_id, sample_rate):
    """Bytes of the clips ``ids`` as the audio cache stores them: float32 samples of each full clip.

    Arguments
    ---------
    ids : list of clip ids
    rows_by_id : dict id -> manifest row (with ``duration`` in seconds)
    sample_rate : int

    Returns
    -------
    int
    """
    samples = sum(int(round(float(rows_by_id[i]["duration"]) * sample_rate)) for i in ids)
    return BYTES_PER_VALUE * samples


def _vm_hwm_bytes():
    """The process's peak RSS since the last reset (``VmHWM``), in bytes; None where unreadable."""
    try:
        with open(STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Reset the kernel's peak RSS of this process; True when it worked."""
    try:
        with open(CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
        return _vm_hwm_bytes() is not None
    except OSError:
        return False


def _lifetime_peak_rss_bytes():
    """``ru_maxrss`` of the process in bytes (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakMeter:
    """Peak RSS and GPU memory between :meth:`start` and :meth:`stop`, and the wall time."""

    def __init__(self, device=None):
        self.device = device
        self.task_scope = False
        self.started = None

    def _cuda(self):
        return torch.cuda.is_available() and str(self.device or "").startswith("cuda")

    def start(self):
        self.task_scope = _reset_peak_rss()
        if self._cuda():
            torch.cuda.reset_peak_memory_stats(self.device)
        self.started = time.perf_counter()
        return self

    def stop(self):
        """``{"peak_rss_bytes", "peak_rss_scope", "peak_gpu_bytes", "wall_s"}``."""
        peak = _vm_hwm_bytes() if self.task_scope else None
        return {
            "peak_rss_bytes": peak if peak is not None else _lifetime_peak_rss_bytes(),
            "peak_rss_scope": "task" if peak is not None else "process",
            "peak_gpu_bytes": int(torch.cuda.max_memory_allocated(self.device)) if self._cuda() else None,
            "wall_s": time.perf_counter() - self.started,
        }


def resources_summary(per_task):
    """The ``resources`` block of results.json from each task's ``per_task[k]["resources"]``.

    Returns a dict of lists (one value per task, None where a task has none) and their maxima:
    ``peak_rss_bytes``, ``peak_gpu_bytes``, ``memory_bytes``, ``update_time_s`` and
    ``peak_rss_bytes_max`` ...
    """
    rows = [t.get("resources") or {} for t in per_task]
    out = {}
    for key in ("peak_rss_bytes", "peak_gpu_bytes", "memory_bytes", "update_time_s"):
        values = [r.get(key) for r in rows]
        out[key] = values
        defined = [v for v in values if v is not None]
        out[f"{key}_max"] = max(defined) if defined else None
    scopes = {r.get("peak_rss_scope") for r in rows if r}
    out["peak_rss_scope"] = scopes.pop() if len(scopes) == 1 else "mixed"
    out["memory_stored_as"] = rows[-1].get("memory_stored_as") if rows else None
    return out
