"""iCaRL (Rebuffi et al. 2017): herding memory, sigmoid distillation, nearest-mean-of-exemplars.

Memory: :class:`IcarlMemory` (``memory_size`` clips, ``memory_size // classes seen`` per
class chosen by herding on L2-normalised embeddings, the class-balanced frame and random
leftover slots of :class:`soundcl.memory.policies.PrototypeMemory`). The memory clips train
alongside the task's (``CurrentTaskWithMemory``).
Loss, as the paper: binary cross-entropy with logits, summed over the seen classes and
averaged over the batch; targets are the one-hot labels on the current task's classes
and the previous model's sigmoid outputs on the old classes (the teacher: task k-1's
``CKPT+final``, reloaded at ``begin_task`` as LwF's, fed the student's features). The
old-class term is written BCE(student, q) - BCE(teacher, q) (q = sigmoid(teacher)), i.e.
the binary KL: the same gradients as the paper's BCE, and zero for an identical teacher.
No mixup (``use_mixup`` must be False). The linear head still selects the best
checkpoint on the validation set.

Test (row k of the accuracy matrix): nearest mean of exemplars. The loop tests *before*
the memory update; the exemplar set is therefore computed here as the loop will compute
it right after testing: the same ``IcarlMemory`` selection, with the same seeded RNG,
over the previous memory (``task<k-1>/task_state.json``) plus task k's training clips, by
the same final model, so the means are those of the paper (over the updated exemplar
sets of every seen class). Class mean = mean of the L2-normalised embeddings (eval mode,
full clips; no flipped copies; those of the herding pass, so one encoder pass in all: the
loop's memory update reuses the selection), L2-normalised; prediction = the nearest mean (L2).
Under DDP the exemplars and means are the main process's (broadcast).
The linear head's accuracy on each tested task is written too, to
``save/task<k>/test_stats_linear.json`` (``accuracy``, ``tasks``).
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from soundcl.results import metrics
from soundcl.base.atomic import write_json_atomic
from soundcl.core.brains import UNSEEN_LOGIT
from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.memory.policies import PrototypeMemory
from soundcl.memory.scores import _EvalMode, compute_embeddings, herding
from soundcl.base.randomness import derive_seed
from soundcl.core.ddp import from_main_process
from soundcl.methods.supervised.lwf import TeacherBrain
from soundcl.core.task_loop import TASK_STATE_FILE, MemoryContext

LINEAR_STATS_FILE = "test_stats_linear.json"


class IcarlMemory(PrototypeMemory):
    """iCaRL's herding memory of ``memory_size`` clips (class-balanced)."""

    HPARAMS = {"memory_size": REQUIRED, "use_mixup": REQUIRED}

    @classmethod
    def from_hparams(cls, hparams):
        if hparams["use_mixup"]:  # the BCE targets are per-row labels
            raise ConfigError(f"use_mixup=True is not supported by strategy={hparams['strategy']}: set use_mixup=False")
        return cls(hparams["memory_size"])

    def __init__(self, memory_size):
        super().__init__(memory_size)
        self.embedded = None  # (candidate ids, embeddings [n, emb_dim]) of the last herding

    def choose(self, candidates, groups, quota, context):
        """iCaRL herding per class on the L2-normalised embeddings (one encoder pass, kept in ``embedded``)."""
        embeddings = compute_embeddings(candidates, context)
        self.embedded = (list(candidates), embeddings)
        normed = F.normalize(embeddings, dim=-1)
        return {c: [positions[j] for j in herding(normed[positions], quota)] for c, positions in sorted(groups.items())}

    def select(self, memory_ids, task_rows, context):
        # IcarlBrain.before_testing chose this very memory (same candidates, model and seeded
        # RNG) to compute the class means: reuse it instead of a second encoder pass.
        chosen = getattr(context.brain, "chosen_exemplars", None)
        if chosen is not None and chosen[0] == (context.task_id, tuple(memory_ids)):
            return list(chosen[1])
        return super().select(memory_ids, task_rows, context)

    def __repr__(self):
        return f"IcarlMemory(memory_size={self.memory_size})"


def classification_bce(logits, targets, classes):
    """BCE with logits of the one-hot labels on ``classes``, summed over them, batch mean."""
    onehot = (targets[:, None] == torch.as_tensor(classes, device=logits.device)[None, :]).float()
    return F.binary_cross_entropy_with_logits(logits[:, classes].float(), onehot, reduction="sum") / logits.shape[0]


def distillation_bce(student_logits, teacher_logits, classes):
    """BCE(sigmoid(student), sigmoid(teacher)) - BCE(teacher, itself) on ``classes``: summed, batch mean."""
    if len(classes) == 0:
        return torch.zeros((), device=student_logits.device)
    teacher = teacher_logits[:, classes].float()
    q = torch.sigmoid(teacher)
    n = student_logits.shape[0]
    return (F.binary_cross_entropy_with_logits(student_logits[:, classes].float(), q, reduction="sum")
            - F.binary_cross_entropy_with_logits(teacher, q, reduction="sum")) / n


def nearest_mean(embeddings, means, classes):
    """Class (from ``classes``) of the nearest mean, for L2-normalised ``embeddings`` [n, d], ``means`` [c, d]."""
    distances = torch.cdist(F.normalize(embeddings.float(), dim=-1), means.float())
    return torch.as_tensor(classes, dtype=torch.long)[distances.argmin(dim=1).cpu()]


def class_means(embeddings, labels, classes):
    """L2-normalised mean of the L2-normalised embeddings of each class, [len(classes), d]."""
    normed = F.normalize(embeddings.float(), dim=-1)
    labels = torch.as_tensor(labels)
    return F.normalize(torch.stack([normed[labels == c].mean(dim=0) for c in classes]), dim=-1)


class IcarlBrain(TeacherBrain):
    HPARAMS = {"memory_size": REQUIRED}

    future_eval_unsupported = "NME test: a future task's classes have no exemplar mean yet"
    means = None  # [n seen classes, emb_dim] exemplar means of the task being tested
    chosen_exemplars = None  # ((task, previous memory), exemplar ids) of the last before_testing
    mean_classes = ()

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.new_classes = sorted(self.task_classes[self.task_id])

    def compute_objectives(self, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().compute_objectives(predictions, batch, stage)
        logits = predictions[0]
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=logits.device)
        loss = classification_bce(logits, targets, self.new_classes)
        distill = torch.zeros((), device=logits.device)
        if self.teacher_logits is not None:
            distill = distillation_bce(logits, self.teacher_logits, self.old_classes)
        self.last_distillation = float(distill.detach())
        return loss + distill

    # ------------------------------------------------------------ testing: NME
    def before_testing(self, train_rows, loader_kwargs):
        """The exemplars (the memory the loop keeps after testing: same policy, seed and model)
        and their class means, from one encoder pass over the candidates. Under DDP both are
        the main process's (broadcast)."""
        memory_ids = []
        if self.task_id > 0:
            with open(os.path.join(self.task_dir(self.task_id - 1), TASK_STATE_FILE), encoding="utf-8") as f:
                memory_ids = json.load(f)["memory"]
        rows_by_id = {row["ID"]: row for row in train_rows}
        current = set(self.new_classes)
        task_rows = [row for row in train_rows if int(row["class_idx"]) in current]
        context = MemoryContext(self.task_id, self, rows_by_id, self.seen_classes, self.make_task_dataset,
                                loader_kwargs, np.random.RandomState(derive_seed(self.hparams.seed, self.task_id,
                                                                                 "memory")))
        selector = IcarlMemory(self.hparams.memory_size)
        ids = selector.select(memory_ids, task_rows, context)
        if selector.embedded is not None:  # herding embedded every candidate
            candidates, embeddings = selector.embedded
            position = {clip_id: pos for pos, clip_id in enumerate(candidates)}
            embeddings = embeddings[[position[i] for i in ids]]
        else:  # every candidate fits in the memory: no herding ran
            embeddings = compute_embeddings(ids, context)
        labels = [int(rows_by_id[i]["class_idx"]) for i in ids]
        means = class_means(embeddings, labels, sorted(set(labels)))
        ids, labels, means = from_main_process((list(ids), labels, means.cpu()))
        self.chosen_exemplars = ((self.task_id, tuple(memory_ids)), list(ids))  # for IcarlMemory.select
        self.exemplars = list(ids)  # for tests: the memory the loop keeps after testing
        self.mean_classes = sorted(set(labels))
        self.means = means.to(self.device)
        self.linear_accuracy = []

    def task_il_nme(self, embeddings):
        """Task-incremental NME predictions: the nearest exemplar mean among the tested task's classes."""
        keep = [i for i, c in enumerate(self.mean_classes) if c in set(self.eval_task_classes)]
        if not keep or not embeddings:
            return []
        classes = [self.mean_classes[i] for i in keep]
        return nearest_mean(torch.cat(embeddings).to(self.means.device), self.means[keep], classes).tolist()

    def evaluate_accuracy(self, dataset, loader_kwargs):
        """NME accuracy and confusion (the matrix); the linear head's accuracy goes to test_stats_linear.json."""
        loader_kwargs = dict(loader_kwargs)
        loader_kwargs["shuffle"] = False
        loader = sb.dataio.dataloader.make_dataloader(dataset, **loader_kwargs)
        targets, nme, linear, embeddings = [], [], [], []
        with _EvalMode(self):
            for batch in loader:
                batch = batch.to(self.device)
                wavs, lens = batch.sig
                emb = self.embed(wavs, lens, sb.Stage.TEST)
                logits = self.modules.classifier(emb).masked_fill(~self.seen_mask(emb.device), UNSEEN_LOGIT)
                targets.extend(torch.as_tensor(batch.class_idx).tolist())
                linear.extend(logits.argmax(dim=-1).tolist())
                nme.extend(nearest_mean(emb, self.means, self.mean_classes).tolist())
                embeddings.append(emb.float().cpu())
        self.targets, self.predictions = targets, linear
        self.linear_accuracy.append(self.stage_accuracy())
        if if_main_process():
            write_json_atomic(os.path.join(self.task_dir(self.task_id), LINEAR_STATS_FILE),
                              {"accuracy": self.linear_accuracy, "tasks": list(range(len(self.linear_accuracy)))})
        self.targets, self.predictions = targets, nme
        self.til_predictions = self.task_il_nme(embeddings) if self.eval_task_classes is not None else []
        return self.stage_accuracy(), metrics.confusion_matrix(targets, nme, self.hparams.n_classes)
