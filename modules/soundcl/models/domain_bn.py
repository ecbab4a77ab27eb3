"""Domain-specific BatchNorm: shared weights, one set of BatchNorm layers per domain.

The DCASE 2026 domain-agnostic incremental baseline (soundcl.methods.supervised.domain_bn):
:func:`convert_batchnorm` replaces every BatchNorm layer of a model, in place, with a
:class:`DomainBatchNorm` holding one copy per domain (affine parameters and running
statistics) and a ``current_domain`` switch; the convolutions and the classifier stay
shared. At test the domain is unknown: :func:`select_by_entropy` picks, per clip, the
set whose prediction has the lowest entropy.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class DomainBatchNorm(nn.Module):
    """``n_domains`` copies of a BatchNorm layer; ``forward`` uses set ``current_domain``."""

    def __init__(self, batchnorm, n_domains):
        super().__init__()
        self.sets = nn.ModuleList(copy.deepcopy(batchnorm) for _ in range(int(n_domains)))
        self.current_domain = 0

    def forward(self, x):
        return self.sets[self.current_domain](x)

    def extra_repr(self):
        return f"n_domains={len(self.sets)}, current_domain={self.current_domain}"


def convert_batchnorm(module, n_domains):
    """Replace every BatchNorm layer (1d/2d/3d) under ``module`` with a :class:`DomainBatchNorm`,
    in place; returns how many were replaced (0 when none, or already converted)."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, DomainBatchNorm):
            continue
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, DomainBatchNorm(child, n_domains))
            count += 1
        else:
            count += convert_batchnorm(child, n_domains)
    return count


def domain_batchnorms(module):
    """The :class:`DomainBatchNorm` layers under ``module``."""
    return [m for m in module.modules() if isinstance(m, DomainBatchNorm)]


def set_domain(module, domain):
    """Switch every domain BatchNorm under ``module`` to set ``domain``."""
    for layer in domain_batchnorms(module):
        if not 0 <= domain < len(layer.sets):
            raise IndexError(f"domain {domain} out of range: {len(layer.sets)} BatchNorm sets")
        layer.current_domain = int(domain)


def copy_domain(module, source, target):
    """Set ``target`` of every domain BatchNorm starts as set ``source`` (parameters and statistics)."""
    for layer in domain_batchnorms(module):
        layer.sets[target].load_state_dict(layer.sets[source].state_dict())


def domain_parameters(module, domain):
    """The parameters of BatchNorm set ``domain``."""
    return [p for layer in domain_batchnorms(module) for p in layer.sets[domain].parameters()]


def prediction_entropy(logits):
    """Entropy (nats) of softmax(logits) over the last dimension: [..., C] -> [...]."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def select_by_entropy(logits_per_set):
    """Per clip, the set whose prediction has the lowest entropy.

    Arguments
    ---------
    logits_per_set : torch.Tensor [n_sets, batch, n_classes]

    Returns
    -------
    torch.Tensor [batch] of set indices (ties: the lowest index).
    """
    return prediction_entropy(logits_per_set).argmin(dim=0)


def pick(logits_per_set, sets):
    """``logits_per_set`` [n_sets, batch, C] at set ``sets[b]`` for every clip ``b``: [batch, C]."""
    return logits_per_set[sets, torch.arange(logits_per_set.shape[1], device=logits_per_set.device)]
