"""The continual-SSL family of ``recipes/ssl_train.py``: the YAML's ``ssl_method`` -> its Brain.

:data:`SSL_METHODS` is the only place that names the family's methods. Each row
is a Brain (one file of this folder, declaring its ``HPARAMS``) and the task-data
policy it trains with; the memory policy is the family's, ``replay_num_keep``
random clips of every finished task
(:class:`~soundcl.memory.policies.PerTaskRandom`). The published scripts
(``recipes/moco_train.py`` ...) are ``ssl_train.py`` with their row fixed.
"""
from typing import Callable, NamedTuple

from soundcl.base.contract import ConfigError
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.memory.policies import PerTaskRandom
from soundcl.methods.ssl.barlow import SupBarlowTwins
from soundcl.methods.ssl.base import SimCLR, SimSiam, SupCLR
from soundcl.methods.ssl.cassle import CaSSiam, CassleBarlowTwins, CassleMoCo, CassleSimCLR
from soundcl.methods.ssl.labeldist import SupCLRLabelDist
from soundcl.methods.ssl.moco import MoCo, SupMoCo
from soundcl.methods.ssl.sup_term import SupSiam

#: What this module reads.
HPARAMS = {
    # A key of SSL_METHODS; every YAML of the family names its own. Left out (a YAML of before the
    # family had one recipe): only a published script runs it, with the script's method.
    "ssl_method": None,
}


def yaml_valid_replay(hparams):
    """Task k's clips plus the memory; validation replay as the YAML's ``valid_replay`` says."""
    return CurrentTaskWithMemory.from_hparams(hparams)


def fraction_valid_replay(hparams):
    """Task k's clips plus the memory; validation replay by ``fraction`` whatever ``valid_replay`` says:
    what the MoCo / Barlow Twins / SupSiam / CaSSLe / label-distillation scripts have always built
    (kept, so that their runs are unchanged)."""
    return CurrentTaskWithMemory()


class SSLMethod(NamedTuple):
    brain: type  # an SSLBrain subclass
    task_data: Callable = yaml_valid_replay  # hparams -> task-data policy

    @property
    def parts(self):
        """The parts whose ``HPARAMS`` the recipe checks, besides the recipe's own."""
        return [self.brain, CurrentTaskWithMemory, PerTaskRandom]


#: ssl_method -> (Brain, task-data policy); the names are the published scripts' (recipes/<name>_train.py).
SSL_METHODS = {
    "simclr": SSLMethod(SimCLR),
    "simsiam": SSLMethod(SimSiam),
    "supclr": SSLMethod(SupCLR),
    "sup_labeldist": SSLMethod(SupCLRLabelDist, fraction_valid_replay),
    "moco": SSLMethod(MoCo, fraction_valid_replay),
    "supmoco": SSLMethod(SupMoCo, fraction_valid_replay),
    "barlowtwins": SSLMethod(SupBarlowTwins, fraction_valid_replay),
    "supsiam": SSLMethod(SupSiam, fraction_valid_replay),
    "cassle_simclr": SSLMethod(CassleSimCLR, fraction_valid_replay),
    "cassle_moco": SSLMethod(CassleMoCo, fraction_valid_replay),
    "cassle_barlowtwins": SSLMethod(CassleBarlowTwins, fraction_valid_replay),
    "cassiam": SSLMethod(CaSSiam, fraction_valid_replay),
}


def chosen(hparams, script_method=None):
    """The :class:`SSLMethod` named by ``hparams["ssl_method"]``; ConfigError for an unknown name.

    ``script_method``: the method of a published script (``recipes/moco_train.py``: ``moco``),
    which a YAML leaving ``ssl_method`` out runs and a YAML naming another method contradicts.
    """
    name = hparams["ssl_method"]
    if script_method is not None and name not in (None, script_method):
        raise ConfigError(f"ssl_method={name!r}, but this script runs ssl_method={script_method!r}: "
                          f"run recipes/ssl_train.py for {name!r}")
    name = script_method if name is None else str(name)
    if name not in SSL_METHODS:
        raise ConfigError(f"ssl_method={name!r} is not valid: expected one of {', '.join(SSL_METHODS)}")
    return SSL_METHODS[name]
