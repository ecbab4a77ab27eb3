"""A-GEM for SupCLR (Chaudhry et al. 2019; cssl_sound's ``supclr_train_agem.py``).

Training data: the current task's clips only. Memory: ``replay_num_keep``
random clips of every finished task (:class:`soundcl.memory.policies.PerTaskRandom`),
used only for the *reference gradient*: at each training step, a reference
batch of as many memory clips as the training batch has (drawn uniformly with
replacement, as the original pairs each training clip with a random memory
clip) goes through the same SupCLR loss (``sup_weight`` x CE + ``ssl_weight``
x NT-Xent); its gradient ``g_ref`` is kept, then the training batch's gradient
``g`` is computed. When ``g . g_ref < 0`` (the step would increase the memory
loss) ``g`` is replaced by its projection
``g - (g . g_ref / g_ref . g_ref) g_ref``, whose dot product with ``g_ref`` is 0.
Gradients are flattened over every trainable parameter except the
``predictor`` module's (as the original). Task 0 (no memory) is plain SupCLR.

DDP: both backward passes run through the DDP-wrapped modules, which average
gradients over processes, so ``g`` and ``g_ref`` (and the projection) are
the same on every process; a parameter outside a DDP wrapper has its reference
gradient averaged explicitly.

The original has no mixup for the reference batch (``NotImplementedError``):
``use_mixup`` must be False.
"""
import numpy as np
import torch

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch

from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.memory.policies import PerTaskRandom, _parse_num_keep
from soundcl.base.randomness import derive_seed
from soundcl.methods.ssl.base import SupCLR
from soundcl.core.task_data import CurrentTaskWithMemory

#: Modules left out of the A-GEM gradient vectors (the original excludes the SimSiam predictor).
EXCLUDED_MODULES = ("predictor",)


def project_gradient(grad, reference):
    """A-GEM projection of a flat gradient.

    Arguments
    ---------
    grad : torch.Tensor [n_params], the task gradient
    reference : torch.Tensor [n_params], the memory (reference) gradient

    Returns
    -------
    (projected gradient [n_params], whether it was projected). Unchanged when
    ``grad . reference >= 0``; else ``grad - (grad . reference / |reference|^2) reference``.
    """
    dot = torch.dot(grad, reference)
    if dot >= 0:
        return grad, False
    norm2 = torch.dot(reference, reference)
    if norm2 <= 0:  # a negative dot product implies a non-zero reference
        raise FloatingPointError("A-GEM: zero reference gradient with a negative dot product")
    return grad - (dot / norm2) * reference, True


class AGEMTaskData(CurrentTaskWithMemory):
    """Current task only for training; the memory rows are given apart (``task_data.memory``).

    Validation and test as :class:`soundcl.core.task_data.CurrentTaskWithMemory`.
    """

    def select(self, k, memory_ids, task_rows, seed):
        task_data = super().select(k, memory_ids, task_rows, seed)
        n_current = len(task_rows["train"][k])
        task_data.memory = task_data.train[n_current:]
        task_data.train = task_data.train[:n_current]
        return task_data

    def __repr__(self):
        return "AGEMTaskData()"


class AGEMMemory(PerTaskRandom):
    """:class:`PerTaskRandom` (``replay_num_keep`` per finished task), refusing mixup (see module doc)."""

    HPARAMS = {"use_mixup": REQUIRED}

    @classmethod
    def from_hparams(cls, hparams):
        if hparams["use_mixup"]:
            raise ConfigError("use_mixup=True is not supported by A-GEM (the original has no mixup for "
                              "the reference batch): set use_mixup=False")
        if _parse_num_keep(hparams["replay_num_keep"]) == 0:
            raise ConfigError("replay_num_keep=0 leaves A-GEM without a memory (plain SupCLR): "
                              "set replay_num_keep > 0 or 'all'")
        return super().from_hparams(hparams)


class SupCLRAGEM(SupCLR):
    """:class:`soundcl.methods.ssl.base.SupCLR` whose gradient is projected by A-GEM from task 1 on.

    Logged per epoch: ``agem_violations``, the fraction of steps whose task
    gradient conflicted with the reference gradient (and was projected).
    """

    memory_set = None  # two-view training data set of the memory clips (None at task 0)
    reference_grad = None  # flat reference gradient [n_params] of the current step
    #: (g . g_ref, projected g . g_ref, projected?) of the last step (for tests and logs)
    last_projection = None

    def prepare_task_data(self, task_dir, task_data):
        super().prepare_task_data(task_dir, task_data)
        memory = getattr(task_data, "memory", [])
        self.memory_set = self.make_task_dataset(memory, train=True) if memory else None

    def agem_parameters(self):
        """Trainable parameters of the A-GEM vectors, in a fixed order (predictor left out)."""
        return [p for name, module in self.modules.items() if name not in EXCLUDED_MODULES
                for p in module.parameters() if p.requires_grad]

    def reference_batch(self, n_clips):
        """``n_clips`` memory clips drawn with replacement; a pure function of (seed, task, epoch, step)."""
        rng = np.random.RandomState(derive_seed(self.hparams.seed, self.task_id,
                                                self.hparams.epoch_counter.current, self.step, "agem"))
        return PaddedBatch([self.memory_set[int(i)] for i in rng.randint(0, len(self.memory_set), size=n_clips)])

    def _flat_grad(self, params):
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])

    def compute_reference_grad(self, n_clips):
        """Backward the SupCLR loss of a reference batch; keep its flat gradient, zero the grads."""
        batch = self.reference_batch(n_clips)
        with self.training_ctx:
            outputs = self.compute_forward(batch, sb.Stage.TRAIN)
            loss, _ = self.ssl_objectives(outputs, batch, sb.Stage.TRAIN)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite A-GEM reference loss at task {self.task_id}")
        self.scaler.scale(loss).backward()
        params = self.agem_parameters()
        reference = self._flat_grad(params)
        if self.distributed_launch and not self._all_wrapped():
            torch.distributed.all_reduce(reference)
            reference /= torch.distributed.get_world_size()
        self.optimizer.zero_grad(set_to_none=True)
        return reference

    def _all_wrapped(self):
        from torch.nn.parallel import DistributedDataParallel

        return all(isinstance(m, DistributedDataParallel) for name, m in self.modules.items()
                   if name not in EXCLUDED_MODULES and any(p.requires_grad for p in m.parameters()))

    def fit_batch(self, batch):
        if self.grad_accumulation_factor != 1:
            raise ConfigError("A-GEM projects the gradient of every step: grad_accumulation_factor must be 1")
        self.reference_grad = None
        if self.memory_set is not None:
            self.reference_grad = self.compute_reference_grad(len(batch.id))
        return super().fit_batch(batch)

    def optimizers_step(self):
        if self.reference_grad is not None:
            params = self.agem_parameters()
            grad = self._flat_grad(params)
            projected, conflict = project_gradient(grad, self.reference_grad)
            if conflict:
                offset = 0
                for p in params:
                    n = p.numel()
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.copy_(projected[offset:offset + n].view_as(p))
                    offset += n
            self.stage_parts["agem_violations"] += float(conflict)
            self.last_projection = (float(torch.dot(grad, self.reference_grad)),
                                    float(torch.dot(projected, self.reference_grad)), conflict)
        super().optimizers_step()
