"""Replay memory policies: which training clips are kept after each task.

A policy is a small object, built by the recipe from the hparams it declares,
with one method::

    select(memory_ids, task_rows, context) -> list of clip ids

``memory_ids`` is the current memory, ``task_rows`` the manifest rows of the
task just learnt, ``context`` a :class:`soundcl.core.task_loop.MemoryContext`
(model, clips, seeded RNG). The returned list is the memory used while
training the next task. Policies with state across tasks also implement
``state_dict()`` / ``load_state_dict(state)`` (JSON-serialisable).

Fixed-size episodic memories (the on-device replay recipe) choose among the
*candidates*: the current memory plus the clips of the task just learnt.
:class:`RandomMemory` and :class:`ReservoirMemory` are not class-balanced by
definition; :class:`PrototypeMemory` (iCaRL herding, ``prototype_herding``) and
:class:`UncertaintyMemory` keep ``memory_size // n_seen_classes`` clips per
class and fill the leftover slots at random; :class:`AscclPrototypeMemory`
(ASC-CL's ``prototype``) keeps as many per class and leaves leftover slots empty. Embeddings and predictions are
computed in batches under ``torch.no_grad()``, once per candidate, with the
brain's modules on the brain's device.
"""
import torch

from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.memory.scores import compute_embeddings, herding, perturbed_predictions, stride_indices
from soundcl.memory.perturbations import UNCERT_METRICS, make_perturbation, vote_uncertainty


def _parse_num_keep(num_keep):
    if num_keep in ("all", "All", "ALL", None):
        return None
    num_keep = int(num_keep)
    if num_keep < 0:
        raise ValueError(f"replay_num_keep must be >= 0 or 'all', got {num_keep}")
    return num_keep


class MemoryPolicy:
    """Base of the memory policies: no state across tasks unless a policy keeps one."""

    HPARAMS = {}

    def select(self, memory_ids, task_rows, context):
        """The memory for the next task (list of clip ids)."""
        raise NotImplementedError

    def state_dict(self):
        """JSON-serialisable state carried across tasks (saved with each finished task)."""
        return None

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` (called when a rerun skips finished tasks)."""


class NoMemory(MemoryPolicy):
    """Keep nothing (fine-tuning; evaluation recipes)."""

    def select(self, memory_ids, task_rows, context):
        return []

    def __repr__(self):
        return "NoMemory()"


class PerTaskRandom(MemoryPolicy):
    """Keep ``num_keep`` random clips of every finished task (``'all'``: all of them).

    This is the replay of the published supervised/SSL recipes
    (``replay_num_keep``); ``num_keep=0`` is plain fine-tuning.
    """

    # Clips kept per finished task: 0 = fine-tuning, "all" = every clip.
    HPARAMS = {"replay_num_keep": REQUIRED}

    @classmethod
    def from_hparams(cls, hparams):
        return cls(hparams["replay_num_keep"])

    def __init__(self, num_keep=0):
        self.num_keep = _parse_num_keep(num_keep)

    def select(self, memory_ids, task_rows, context):
        ids = sorted(row["ID"] for row in task_rows)
        if self.num_keep is None or self.num_keep >= len(ids):
            kept = ids
        else:
            kept = sorted(context.rng.choice(ids, size=self.num_keep, replace=False).tolist())
        return list(memory_ids) + kept

    def __repr__(self):
        return f"PerTaskRandom(num_keep={'all' if self.num_keep is None else self.num_keep})"


# --------------------------------------------------------------------------- helpers
def candidate_ids(memory_ids, task_rows):
    """Current memory then the new task's clips, without duplicates, order kept."""
    seen, ids = set(), []
    for clip_id in list(memory_ids) + [row["ID"] for row in task_rows]:
        if clip_id not in seen:
            seen.add(clip_id)
            ids.append(clip_id)
    return ids


def _check_memory_size(memory_size):
    memory_size = int(memory_size)
    if memory_size < 0:
        raise ValueError(f"memory_size must be >= 0, got {memory_size}")
    return memory_size


def _group_by_class(ids, rows_by_id):
    """``class_idx -> [positions in ids]`` (positions in candidate order)."""
    groups = {}
    for pos, clip_id in enumerate(ids):
        groups.setdefault(int(rows_by_id[clip_id]["class_idx"]), []).append(pos)
    return groups


# --------------------------------------------------------------------------- policies
class RandomMemory(MemoryPolicy):
    """Uniform sample of ``memory_size`` candidates (not class-balanced)."""

    def __init__(self, memory_size):
        self.memory_size = _check_memory_size(memory_size)

    def select(self, memory_ids, task_rows, context):
        candidates = candidate_ids(memory_ids, task_rows)
        if len(candidates) <= self.memory_size:
            return candidates
        keep = context.rng.choice(len(candidates), size=self.memory_size, replace=False)
        return [candidates[i] for i in sorted(keep)]

    def __repr__(self):
        return f"RandomMemory(memory_size={self.memory_size})"


class ReservoirMemory(MemoryPolicy):
    """Reservoir sampling over the stream of every training clip seen so far.

    Each task's clips arrive in an order shuffled by the context's RNG; the
    ``i``-th clip of the stream (0-based) replaces a random slot with
    probability ``memory_size / (i + 1)`` once the memory is full, so every clip
    seen is in the memory with the same probability. ``n_seen`` (the stream
    position) is the policy's checkpointed state.
    """

    def __init__(self, memory_size):
        self.memory_size = _check_memory_size(memory_size)
        self.n_seen = 0

    def select(self, memory_ids, task_rows, context):
        memory = list(memory_ids)
        stream = [row["ID"] for row in task_rows]
        stream = [stream[i] for i in context.rng.permutation(len(stream))]
        in_memory = set(memory)
        for clip_id in stream:
            if clip_id in in_memory:
                continue
            if len(memory) < self.memory_size:
                memory.append(clip_id)
                in_memory.add(clip_id)
            else:
                slot = int(context.rng.randint(0, self.n_seen + 1))
                if slot < self.memory_size:
                    in_memory.discard(memory[slot])
                    memory[slot] = clip_id
                    in_memory.add(clip_id)
            self.n_seen += 1
        return memory

    def state_dict(self):
        return {"n_seen": self.n_seen}

    def load_state_dict(self, state):
        self.n_seen = int(state["n_seen"])

    def __repr__(self):
        return f"ReservoirMemory(memory_size={self.memory_size})"


class _ClassBalancedMemory(MemoryPolicy):
    """``memory_size // n_seen_classes`` clips per class chosen by :meth:`choose`,
    leftover slots (small classes, remainder) filled at random."""

    def __init__(self, memory_size):
        self.memory_size = _check_memory_size(memory_size)

    def choose(self, candidates, groups, quota, context):
        """``class -> positions (in candidates) to keep``, at most ``quota`` each."""
        raise NotImplementedError

    def select(self, memory_ids, task_rows, context):
        candidates = candidate_ids(memory_ids, task_rows)
        if len(candidates) <= self.memory_size:
            return candidates
        groups = _group_by_class(candidates, context.rows_by_id)
        quota = self.memory_size // max(1, len(context.seen_classes))
        chosen = self.choose(candidates, groups, quota, context)
        kept = sorted({pos for c in sorted(chosen) for pos in chosen[c][:quota]})
        rest = sorted(set(range(len(candidates))) - set(kept))
        n_fill = self.memory_size - len(kept)
        if n_fill > 0 and rest:
            kept = sorted(kept + context.rng.choice(rest, size=min(n_fill, len(rest)), replace=False).tolist())
        return [candidates[pos] for pos in kept]


class ClassBalancedRandomMemory(_ClassBalancedMemory):
    """Class-balanced uniform sample."""

    def choose(self, candidates, groups, quota, context):
        return {
            c: context.rng.choice(positions, size=min(quota, len(positions)), replace=False).tolist()
            for c, positions in sorted(groups.items())
        }

    def __repr__(self):
        return f"ClassBalancedRandomMemory(memory_size={self.memory_size})"


class PrototypeMemory(_ClassBalancedMemory):
    """iCaRL herding per class on L2-normalised embeddings (one encoder pass).

    Every class, old ones included, is re-herded with the current model among its
    clips in the candidates (``mem_manage: prototype_herding``; the memory of
    ``sup_train.py --strategy=icarl``).
    """

    def choose(self, candidates, groups, quota, context):
        embeddings = torch.nn.functional.normalize(compute_embeddings(candidates, context), dim=-1)
        return {c: [positions[j] for j in herding(embeddings[positions], quota)] for c, positions in sorted(groups.items())}

    def __repr__(self):
        return f"PrototypeMemory(memory_size={self.memory_size})"


def normalised_herding(features, target, n_select):
    """ASC-CL's herding: indices of ``n_select`` rows picked one by one so that the
    L2-normalised mean of the picked rows stays closest to ``target``.

    features [n, dim] (rows L2-normalised), target [dim] (L2-normalised) -> list of
    ``min(n_select, n)`` distinct row indices in the order picked; ties go to the
    lowest index. Unlike :func:`soundcl.memory.scores.herding` (iCaRL), the running
    mean is normalised before the distance and the target is given (a class mean
    fixed when the class was first seen).
    """
    return herding(features, n_select, target=target, normalise_mean=True)


class AscclPrototypeMemory(MemoryPolicy):
    """ASC-CL's prototype memory (``mem_manage: prototype``, the replay recipe's default).

    With ``q = memory_size // n_seen_classes``: each old class keeps a random subset
    of at most ``q`` of its clips in the memory (no re-herding with the current
    model); a class with fewer than ``q`` memory clips adds its clips of the task
    just learnt and, if that makes more than ``q``, keeps ``q`` of them by
    :func:`normalised_herding` on L2-normalised embeddings towards the class mean.
    A class mean (normalised mean of the normalised embeddings) is fixed when the
    class is first herded and kept across tasks (the policy's checkpointed state).
    Slots left by small classes or by the remainder stay empty.
    """

    def __init__(self, memory_size):
        self.memory_size = _check_memory_size(memory_size)
        self.class_means = {}  # str(class_idx) -> list of float

    def select(self, memory_ids, task_rows, context):
        candidates = candidate_ids(memory_ids, task_rows)
        if len(candidates) <= self.memory_size:
            return candidates
        quota = self.memory_size // max(1, len(context.seen_classes))
        rows = context.rows_by_id
        old = _group_by_class(list(memory_ids), rows)
        new = _group_by_class([row["ID"] for row in task_rows], rows)
        old_ids = {c: [memory_ids[pos] for pos in positions] for c, positions in old.items()}
        new_ids = {c: [task_rows[pos]["ID"] for pos in positions] for c, positions in new.items()}
        kept, to_herd = {}, {}
        for c in sorted(set(old_ids) | set(new_ids)):
            exemplars = old_ids.get(c, [])
            if len(exemplars) > quota:
                exemplars = [exemplars[i] for i in sorted(context.rng.choice(len(exemplars), size=quota, replace=False))]
            if len(exemplars) >= quota:
                kept[c] = exemplars
                continue
            pool = [i for i in new_ids.get(c, []) if i not in set(exemplars)] + exemplars
            if len(pool) <= quota:
                kept[c] = pool
            else:
                to_herd[c] = pool
        if to_herd:
            herd_ids = [i for c in sorted(to_herd) for i in to_herd[c]]
            embeddings = torch.nn.functional.normalize(compute_embeddings(herd_ids, context).double(), dim=-1)
            start = 0
            for c in sorted(to_herd):
                pool = to_herd[c]
                features = embeddings[start:start + len(pool)]
                start += len(pool)
                if str(c) not in self.class_means:
                    self.class_means[str(c)] = torch.nn.functional.normalize(features.mean(0), dim=0).tolist()
                picked = normalised_herding(features, self.class_means[str(c)], quota)
                kept[c] = [pool[j] for j in picked]
        return [i for c in sorted(kept) for i in kept[c]]

    def state_dict(self):
        return {"class_means": self.class_means}

    def load_state_dict(self, state):
        self.class_means = {str(c): list(v) for c, v in state["class_means"].items()}

    def __repr__(self):
        return f"AscclPrototypeMemory(memory_size={self.memory_size})"


class UncertaintyMemory(_ClassBalancedMemory):
    """ASC-CL's uncertainty memory: per class, every ``n // q``-th clip along the
    uncertainty ranking.

    Uncertainty of a clip = ``1 - votes of its most frequent prediction / k``
    over ``metric_k`` perturbed predictions; ``uncert_metric`` names the
    perturbation (see :func:`soundcl.memory.perturbations.make_perturbation`). Per class of
    ``n`` candidates and quota ``q``, the candidates are ranked by increasing
    uncertainty (ties in a random order: most clips share a few vote values) and
    ``ranked[::n // q][:q]`` is kept, ASC-CL's exact indices; leftover slots are
    filled at random. Before task ``uncertainty_from_task`` the selection is
    class-balanced random (ASC-CL: task 0).
    """

    def __init__(self, memory_size, uncert_metric="noisytune", metric_k=6, noise_lambda=0.2, uncertainty_from_task=1,
                 sample_rate=None):
        super().__init__(memory_size)
        self.uncert_metric = uncert_metric
        self.perturbation = make_perturbation(uncert_metric, noise_lambda, sample_rate)
        self.metric_k = int(metric_k)
        if self.metric_k < 1:
            raise ValueError(f"metric_k must be >= 1, got {metric_k}")
        self.perturbation.schedule(self.metric_k, torch.Generator().manual_seed(0))  # a bad k fails now
        self.uncertainty_from_task = int(uncertainty_from_task)

    def scores(self, candidates, context):
        """Uncertainty of each candidate, FloatTensor [len(candidates)]."""
        generator = torch.Generator().manual_seed(int(context.rng.randint(0, 2**31 - 1)))
        predictions = perturbed_predictions(candidates, context, self.perturbation, self.metric_k, generator)
        return vote_uncertainty(predictions)

    def choose(self, candidates, groups, quota, context):
        if context.task_id < self.uncertainty_from_task:
            return ClassBalancedRandomMemory.choose(self, candidates, groups, quota, context)
        uncertainty = self.scores(candidates, context).tolist()
        tie_break = context.rng.permutation(len(candidates)).tolist()
        chosen = {}
        for c, positions in sorted(groups.items()):
            ranked = sorted(positions, key=lambda pos: (uncertainty[pos], tie_break[pos]))
            chosen[c] = [ranked[i] for i in stride_indices(len(ranked), quota)]
        return chosen

    def __repr__(self):
        return (
            f"UncertaintyMemory(memory_size={self.memory_size}, uncert_metric={self.uncert_metric}, "
            f"metric_k={self.metric_k}, perturbation={self.perturbation!r}, "
            f"uncertainty_from_task={self.uncertainty_from_task})"
        )


MEMORY_POLICIES = {
    "random": RandomMemory,
    "reservoir": ReservoirMemory,
    "prototype": AscclPrototypeMemory,  # ASC-CL's
    "prototype_herding": PrototypeMemory,  # iCaRL's
    "uncertainty": UncertaintyMemory,
    "balanced_random": ClassBalancedRandomMemory,
}
MODES = ("finetune", "replay")


class FixedSizeMemory:
    """The fixed-size episodic memory of the replay recipe, as its hparams name it."""

    HPARAMS = {
        "mode": REQUIRED,  # finetune (no memory) or replay
        "mem_manage": REQUIRED,  # one of MEMORY_POLICIES
        "memory_size": REQUIRED,  # clips in the memory, all classes together
        "uncert_metric": REQUIRED,  # uncertainty policy: how candidates are perturbed
        "metric_k": REQUIRED,  # perturbed predictions per candidate
        "noise_lambda": REQUIRED,  # noisytune: noise scale
        "uncertainty_from_task": REQUIRED,  # tasks before this one select class-balanced at random
        "sample_rate": REQUIRED,  # uncert_metric shift / combination: the pitch shift's ratios
    }

    @staticmethod
    def from_hparams(hparams):
        """The memory policy (``NoMemory`` for ``mode: finetune``); ConfigError on an unknown value."""
        mode, mem_manage = hparams["mode"], hparams["mem_manage"]
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not valid: expected one of {', '.join(MODES)}")
        if mem_manage not in MEMORY_POLICIES:
            raise ConfigError(f"mem_manage={mem_manage!r} is not valid: expected one of {', '.join(MEMORY_POLICIES)}")
        if mode == "finetune":
            return NoMemory()
        if mem_manage == "uncertainty":
            if hparams["uncert_metric"] not in UNCERT_METRICS:
                raise ConfigError(f"uncert_metric={hparams['uncert_metric']!r} is not valid: expected one of "
                                  f"{', '.join(UNCERT_METRICS)}")
            try:
                return UncertaintyMemory(hparams["memory_size"], hparams["uncert_metric"], hparams["metric_k"],
                                         hparams["noise_lambda"], hparams["uncertainty_from_task"],
                                         hparams["sample_rate"])
            except ValueError as error:
                raise ConfigError(f"uncert_metric={hparams['uncert_metric']}, metric_k={hparams['metric_k']}: {error}")
        return MEMORY_POLICIES[mem_manage](hparams["memory_size"])
