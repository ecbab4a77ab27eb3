"""What the strategies compute under torchrun DDP, made the same on every process.

Each process trains on its shard of a task's clips (SpeechBrain's DistributedSampler),
and the task loop broadcasts the memory chosen by the main process. What a strategy
computes outside training is made consistent here: a per-clip estimate is summed
over shards and averaged (:func:`mean_over_processes`, EWC's Fisher), a choice made
from the model is taken from the main process (:func:`from_main_process`: iCaRL's
exemplar means, DER++'s stored logits, GDumb's initial weights). Without a process
group (one process) every function is the identity. Recipe scripts end through
:func:`run_script`.
"""
import atexit
import contextlib
import logging
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import speechbrain as sb


def distributed():
    """Whether a process group is running (torchrun with ``--distributed_backend``)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size():
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if not distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def unwrap(module):
    """The module inside a DistributedDataParallel wrapper (the module itself otherwise)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


@contextlib.contextmanager
def unwrapped(modules):
    """The DDP-wrapped entries of ``modules`` (a ModuleDict) replaced by their modules while
    inside: gradients taken there (e.g. with ``torch.autograd.grad``) are this process's own,
    and DDP expects no gradient synchronisation of them."""
    wrapped = {name: module for name, module in modules.items() if isinstance(module, DistributedDataParallel)}
    for name, module in wrapped.items():
        modules[name] = module.module
    try:
        yield modules
    finally:
        for name, module in wrapped.items():
            modules[name] = module


def shard(items):
    """This process's share of ``items`` (every ``world_size``-th, from its rank): the shards
    of all processes partition ``items``."""
    rank, world_size = rank_and_world_size()
    return list(items)[rank::world_size]


def mean_over_processes(sums, count):
    """Mean over every process's items of per-item quantities summed on each process.

    Arguments
    ---------
    sums : dict name -> tensor, this process's sum over its ``count`` items
    count : int, this process's number of items

    Returns
    -------
    dict name -> (sum of ``sums`` over processes) / (sum of ``count`` over processes),
    identical on every process (all-reduced); ``sums / max(1, count)`` without a process group.
    """
    if not distributed():
        return {name: value / max(1, count) for name, value in sums.items()}
    names = sorted(sums)
    total = torch.tensor([float(count)], dtype=torch.float64)
    dist.all_reduce(total)
    reduced = {}
    for name in names:
        # gloo reduces CPU tensors, nccl CUDA ones: reduce on the tensor's own device.
        value = sums[name].detach().clone()
        dist.all_reduce(value)
        reduced[name] = value / max(1.0, float(total.item()))
    return reduced


def from_main_process(value):
    """``value`` as the main process (rank 0) has it, on every process (CPU tensors inside
    are sent as they are; move them to a device after). Without a process group: ``value``."""
    if not distributed():
        return value
    return sb.utils.distributed.ddp_broadcast(value, src=0)


def run_script(main, argv=None):
    """``main(argv)`` as a recipe script runs it (``argv``: the command line's); under DDP the
    process then ends without interpreter finalization.

    Why: a gloo process that returns normally can abort while Python finalizes, "terminate
    called without an active exception" (SIGABRT; the non-main processes, which return right
    after the task loop's last memory broadcast and barrier). A gloo worker thread frees a
    collective's work after the call has returned, and a barrier holds the works still in
    progress when it was issued (here the memory broadcast) until it is freed itself. When such
    a work holds the last reference to a tensor whose Python object it owns, freeing it takes
    the GIL, and a thread that takes the GIL during finalization is ended inside a noexcept
    destructor (gdb on the core: ``ProcessGroupGloo::runLoop`` -> ``~AsyncBarrierWork`` ->
    ``~AsyncBroadcastWork`` -> ``TensorImpl::decref_pyobject`` -> ``take_gil`` ->
    ``pthread_exit`` -> ``std::terminate``). ``destroy_process_group`` does not wait for the
    workers (DDP's reducers keep the process group alive), and Python cannot keep the tensors
    alive (finalization frees module globals first). So a process that finished its work waits
    for the others (barrier), runs the exit handlers (destroying the process group), flushes
    and ends with ``os._exit(0)``. A failing process (exception, ``SystemExit``) exits as
    Python does, with its status; torchrun then stops the others.
    """
    main(sys.argv[1:] if argv is None else argv)
    if distributed():
        dist.barrier()  # no process leaves while another still writes or communicates
        # CPython's runner of the atexit handlers (os._exit would skip them): our
        # destroy_process_group (soundcl.core.recipe), tqdm's, logging's.
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
