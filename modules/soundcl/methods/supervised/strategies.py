"""Continual-learning strategies of ``recipes/sup_train.py`` (``--strategy=NAME``).

A strategy is a Brain (what is learnt and how), a task-data policy (which
clips each task trains on) and a memory policy (what is kept for replay),
each declaring the hparams it reads (:mod:`soundcl.base.contract`). The table
:data:`STRATEGIES` is the only place that names them; references per strategy
are in docs/protocols.md ("Strategies"). A strategy runs on any data set's
``sup_train.yaml`` or ``replay_train.yaml`` (the on-device model; its early stopping,
``patience``, is honoured as by :class:`soundcl.methods.supervised.replay.ReplayBrain`) and under torchrun
DDP (:mod:`soundcl.core.ddp`).
"""
from typing import NamedTuple

from soundcl.core.brains import SupervisedBrain
from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.memory.policies import NoMemory, PerTaskRandom
from soundcl.methods.supervised.replay import PatienceCounter, ReplayBrain
from soundcl.methods.supervised.balanced import ClassBalancedBatches, with_balanced_batches
from soundcl.methods.supervised.bic import BiCBrain, BiCTaskData
from soundcl.methods.supervised.derpp import DerppBrain, LogitMemory
from soundcl.methods.supervised.er_ace import ERACEBrain, FixedSizeReplayMemory
from soundcl.methods.supervised.ewc import EWCBrain
from soundcl.methods.supervised.gdumb import GDumbBrain, GDumbMemory, GDumbTaskData
from soundcl.methods.supervised.icarl import IcarlBrain, IcarlMemory
from soundcl.methods.supervised.joint import JointIncremental, JointTraining
from soundcl.methods.supervised.lwf import LwFBrain
from soundcl.methods.supervised.wa import WABrain
from soundcl.methods.supervised import online
from soundcl.methods.supervised.online import OnlineDerpp, OnlineERACE, OnlineTraining
from soundcl.core.task_data import CurrentTaskWithMemory, DomainTasks
from soundcl.methods.supervised.domain_bn import DomainBNBrain

#: What this module reads.
HPARAMS = {
    "strategy": REQUIRED,
    # recipes/replay_train.py's cross-validation; sup_train.py runs one split and refuses True.
    "cross_validate": False,
    # True: online continual learning, one pass over the stream, the memory updated per batch
    # (er, er_ace, derpp; soundcl.methods.supervised.online, hparams/<dataset>/online_train.yaml).
    "online": False,
    # Domain-incremental learning: task k is the clips of the domains task_domains[k], every class in
    # every task (soundcl.data.domains, soundcl.core.task_data.DomainTasks); null: class-incremental.
    "task_domains": None,
}

#: Strategies of the domain-incremental scenario only (they need ``task_domains``).
DOMAIN_ONLY = ("dcase_domain_bn",)
#: Strategies that assume new classes in every task, refused with ``task_domains``: the reason.
CLASS_INCREMENTAL_ONLY = {
    "icarl": "its nearest-mean classifier and distillation split old and new classes",
    "bic": "its bias correction rescales the new classes' logits",
    "wa": "it aligns the new classes' head weights to the old ones'",
    "gdumb": "its class-balanced memory, full after the first domain, takes no clip of a later one",
}


class Strategy(NamedTuple):
    brain: type  # a ContinualBrain subclass
    task_data: type  # a task-data policy class (built without arguments)
    memory: type  # a memory policy class with from_hparams(hparams)
    online: type = None  # the Brain's mixin in online mode (soundcl.methods.supervised.online); None: none

    def task_data_policy(self, hparams):
        """The task-data policy, built from the hparams when it reads some (``from_hparams``)."""
        build = getattr(self.task_data, "from_hparams", None)
        policy = build(hparams) if build is not None else self.task_data()
        return DomainTasks(policy) if hparams["task_domains"] else policy

    def brain_class(self, hparams):
        """The Brain to build: with an early-stopping epoch counter (``patience`` of the replay
        YAMLs) the strategy's Brain stops a task as :class:`soundcl.methods.supervised.replay.ReplayBrain` does;
        with ``replay_batches: class_balanced`` its training batches are class-balanced
        (:mod:`soundcl.methods.supervised.balanced`)."""
        brain = self.brain
        if isinstance(hparams["epoch_counter"], PatienceCounter):
            brain = type(brain.__name__, (ReplayBrain, brain), {"__module__": brain.__module__})
        return with_balanced_batches(brain, hparams)

    @property
    def parts(self):
        """The parts whose ``HPARAMS`` the recipe checks."""
        return [self.brain, self.task_data, self.memory, ReplayBrain, ClassBalancedBatches]


class NoMemoryPolicy(NoMemory):
    """No memory: the task-data policy already gives every clip a strategy trains on."""

    @classmethod
    def from_hparams(cls, hparams):
        return cls()


#: name -> (Brain, task-data policy, memory policy)
STRATEGIES = {
    # Today's behaviour: fine-tuning, or replay of replay_num_keep clips per finished task.
    "finetune_or_replay": Strategy(SupervisedBrain, CurrentTaskWithMemory, PerTaskRandom),
    "joint": Strategy(SupervisedBrain, JointTraining, NoMemoryPolicy),
    "joint_incremental": Strategy(SupervisedBrain, JointIncremental, NoMemoryPolicy),
    # The Brain's extra loss; replay_num_keep > 0 adds replay as for finetune_or_replay.
    "lwf": Strategy(LwFBrain, CurrentTaskWithMemory, PerTaskRandom),
    "ewc": Strategy(EWCBrain, CurrentTaskWithMemory, PerTaskRandom),
    # Fixed-size memory (memory_size, mem_manage); memory clips train alongside the task's.
    "er_ace": Strategy(ERACEBrain, CurrentTaskWithMemory, FixedSizeReplayMemory, online=OnlineERACE),
    "derpp": Strategy(DerppBrain, CurrentTaskWithMemory, LogitMemory, online=OnlineDerpp),
    # Trains from scratch on its class-balanced memory only (memory_size).
    "gdumb": Strategy(GDumbBrain, GDumbTaskData, GDumbMemory),
    # Herding memory (memory_size), sigmoid distillation, nearest-mean-of-exemplars at test.
    "icarl": Strategy(IcarlBrain, CurrentTaskWithMemory, IcarlMemory),
    # Replay (replay_num_keep) with a cure of the new classes' bias: BiC's bias-correction layer fitted
    # on a held-out slice of the memory (bic_holdout), WA's aligning of the new classes' head weights.
    "bic": Strategy(BiCBrain, BiCTaskData, PerTaskRandom),
    "wa": Strategy(WABrain, CurrentTaskWithMemory, PerTaskRandom),
    # Experience replay (Chaudhry et al. 2019): cross-entropy over current and memory clips alike;
    # fixed-size memory (memory_size, mem_manage). The online strategies: er, er_ace, derpp (online: True).
    "er": Strategy(SupervisedBrain, CurrentTaskWithMemory, FixedSizeReplayMemory, online=OnlineTraining),
    # Domain-incremental only (task_domains): the DCASE 2026 baseline, one BatchNorm set per domain over
    # shared weights, the set of lowest prediction entropy at test (soundcl.methods.supervised.domain_bn).
    "dcase_domain_bn": Strategy(DomainBNBrain, CurrentTaskWithMemory, PerTaskRandom),
}


def chosen(hparams):
    """The :class:`Strategy` named by ``hparams["strategy"]``; ConfigError for an unknown name."""
    name = str(hparams["strategy"])
    if name not in STRATEGIES:
        raise ConfigError(f"strategy={name!r} is not valid: expected one of {', '.join(STRATEGIES)}")
    if hparams["cross_validate"]:
        raise ConfigError("cross_validate=True is not supported by recipes/sup_train.py (one split per run): "
                          "set cross_validate=False, or run recipes/replay_train.py")
    if hparams["task_domains"] and name in CLASS_INCREMENTAL_ONLY:
        raise ConfigError(f"strategy={name} cannot run with task_domains (domain-incremental: every task has the "
                          f"same classes): {CLASS_INCREMENTAL_ONLY[name]}")
    if not hparams["task_domains"] and name in DOMAIN_ONLY:
        raise ConfigError(f"strategy={name} needs task_domains (one BatchNorm set per domain group)")
    if hparams["online"]:
        return online.online_strategy(STRATEGIES[name], name, hparams)
    return STRATEGIES[name]
