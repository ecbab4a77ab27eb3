"""Linear and kNN evaluation of task-wise encoder checkpoints.

Any recipe that trains an encoder task by task (supervised or self-supervised)
leaves ``<encoder_output>/save/task{k}/CKPT+final/`` with ``embedding_model``
and ``normalizer`` files. For each task ``k`` the evaluation loads that frozen
encoder, trains a linear classifier (or builds a kNN bank) on a training set
chosen by ``linclf_train_type`` and tests it, which fills row ``k`` of an
accuracy matrix. The shared :class:`soundcl.core.task_loop.TaskLoop` drives it:

* :class:`LinearEvalSets` is the task data policy (which clips task ``k``
  trains, validates and is tested on: ``seen``, ``subset``, ``buffer``, ``full``);
* :class:`LinearEvalBrain` loads the encoder at ``begin_task``, computes the
  embeddings of every clip task ``k`` needs once in ``prepare_task_data`` (kept
  in memory and in ``<save_folder>/task{k}/embeddings.pt``), and trains the
  classifier on them: data set items are embeddings, not waveforms;
* :class:`~soundcl.methods.evaluation.knn_eval.KnnEvalBrain` (its own module) replaces training by a cosine kNN vote.

The encoder is frozen and no augmentation is used, so an embedding is a pure
function of (checkpoint, clip). To keep it so, clips are never zero-padded
inside the encoder: a batch is split into groups of equal length (convolutions
see the padding, which moved embeddings by ~20 % of their scale in a test with
the demo encoder). With ``cache_embeddings: False`` every batch is re-encoded
at every epoch, as published code did; both paths give the same embeddings.
"""
import logging
import os

import numpy as np
import torch

import speechbrain as sb
from speechbrain.dataio.sampler import ReproducibleWeightedRandomSampler
from speechbrain.utils.distributed import if_main_process, run_on_main

from soundcl.data.audio import make_dataset, peak_normalize
from soundcl.core.brains import UNSEEN_LOGIT, ClassifierStages
from soundcl.memory.policies import _parse_num_keep
from soundcl.methods.evaluation.embedding_cache import EMBEDDINGS_FILE, EMBEDDINGS_VERSION, EmbeddingCache, file_stamp
from soundcl.methods.evaluation.encoder_checkpoints import encoder_tasks_found, load_encoder
from soundcl.core.continual import ContinualBrain
from soundcl.base.contract import REQUIRED
from soundcl.base.randomness import derive_seed
from soundcl.core.task_data import TaskData

logger = logging.getLogger(__name__)

TRAIN_TYPES = ("seen", "subset", "buffer", "full")
#: How the clips kept of each task are drawn (``subset_selection``).
SUBSET_SELECTIONS = ("random", "class_balanced")
#: Protocols whose training clips are sampled class-balanced (cssl_sound's class_balanced_dataio_prep).
BALANCED_SAMPLING_TYPES = ("subset", "buffer")


# ====================================================================== data
def random_subset(rows, num_keep, rng):
    """``num_keep`` clip ids of ``rows`` drawn uniformly (cssl_sound's ``rng.choice``); sorted.

    ``num_keep`` None: all.
    """
    ids = sorted(row["ID"] for row in rows)
    if num_keep is None or num_keep >= len(ids):
        return ids
    return sorted(rng.choice(ids, size=num_keep, replace=False).tolist())


def class_balanced_subset(rows, num_keep, rng):
    """``num_keep`` clip ids of ``rows``, spread as evenly as possible over their classes.

    Arguments
    ---------
    rows : list of manifest rows (``ID``, ``class_idx``)
    num_keep : int or None (None: all)
    rng : numpy.random.RandomState

    Returns
    -------
    sorted list of ids.
    """
    by_class = {}
    for row in rows:
        by_class.setdefault(int(row["class_idx"]), []).append(row["ID"])
    if num_keep is None or num_keep >= len(rows):
        return sorted(row["ID"] for row in rows)
    classes = sorted(by_class)
    quota = {c: 0 for c in classes}
    left = num_keep
    # Round-robin in a seeded class order: quotas differ by at most one, and a
    # class with too few clips leaves its share to the others.
    order = [classes[i] for i in rng.permutation(len(classes))]
    while left > 0:
        for c in order:
            if left > 0 and quota[c] < len(by_class[c]):
                quota[c] += 1
                left -= 1
    kept = []
    for c in classes:
        ids = sorted(by_class[c])
        kept.extend(rng.choice(ids, size=quota[c], replace=False).tolist())
    return sorted(kept)


class LinearEvalSets:
    """Task data policy of linear / kNN evaluation (see :class:`soundcl.core.task_data.TaskData`).

    Arguments
    ---------
    train_type : str
        ``seen``: all training clips of tasks ``0..k``;
        ``subset``: ``num_keep`` clips per task of tasks ``0..k``;
        ``buffer``: all clips of task ``k`` plus ``num_keep`` per earlier task;
        (the Brain samples ``subset`` and ``buffer`` training clips class-balanced, as cssl_sound)
        ``full``: all training clips of all tasks, tested on all tasks.
    num_keep : int or ``'all'``
        Clips kept per task for ``subset`` / ``buffer`` (the same clips at every later task).
    selection : str
        How those clips are drawn: ``random`` (uniformly, cssl_sound's) or
        ``class_balanced`` (as evenly as possible over the task's classes).
    with_valid : bool
        Validation clips (of the tasks trained on) to select the best epoch;
        False for training-free evaluation.
    """

    HPARAMS = {
        "linclf_train_type": REQUIRED,  # seen, subset, buffer or full
        "replay_num_keep": REQUIRED,  # clips kept per task by subset / buffer; all = every clip
        "subset_selection": REQUIRED,  # random (cssl_sound) or class_balanced
    }

    @classmethod
    def from_hparams(cls, hparams, with_valid):
        return cls(hparams["linclf_train_type"], hparams["replay_num_keep"], with_valid=with_valid,
                   selection=hparams["subset_selection"])

    def __init__(self, train_type, num_keep, with_valid=True, selection="random"):
        if train_type not in TRAIN_TYPES:
            raise ValueError(f"unknown linclf_train_type {train_type!r}: expected one of {', '.join(TRAIN_TYPES)}")
        if selection not in SUBSET_SELECTIONS:
            raise ValueError(f"unknown subset_selection {selection!r}: expected one of {', '.join(SUBSET_SELECTIONS)}")
        self.train_type = train_type
        self.num_keep = _parse_num_keep(num_keep)
        self.with_valid = with_valid
        self.selection = selection

    def subset_ids(self, j, task_rows, seed):
        """The ``num_keep`` clips kept of task ``j`` (a pure function of seed and task)."""
        rng = np.random.RandomState(derive_seed(seed, j, "linclf-subset"))
        draw = random_subset if self.selection == "random" else class_balanced_subset
        return draw(task_rows["train"][j], self.num_keep, rng)

    def train_ids(self, k, task_rows, seed):
        """Ids of the training clips of task ``k``, in a deterministic order."""
        n = len(task_rows["train"])
        all_of = lambda j: [row["ID"] for row in task_rows["train"][j]]  # noqa: E731
        if self.train_type == "seen":
            return [i for j in range(k + 1) for i in all_of(j)]
        if self.train_type == "subset":
            return [i for j in range(k + 1) for i in self.subset_ids(j, task_rows, seed)]
        if self.train_type == "buffer":
            return all_of(k) + [i for j in range(k) for i in self.subset_ids(j, task_rows, seed)]
        return [i for j in range(n) for i in all_of(j)]

    def select(self, k, memory_ids, task_rows, seed):
        tasks = list(range(len(task_rows["train"]))) if self.train_type == "full" else list(range(k + 1))
        by_id = {row["ID"]: row for j in tasks for row in task_rows["train"][j]}
        train = [by_id[i] for i in self.train_ids(k, task_rows, seed)]
        valid = [row for j in tasks for row in task_rows["valid"][j]] if self.with_valid else []
        return TaskData(train, valid, tasks, {j: task_rows["test"][j] for j in tasks})

    def __repr__(self):
        keep = "all" if self.num_keep is None else self.num_keep
        return f"LinearEvalSets(train_type={self.train_type!r}, num_keep={keep}, selection={self.selection!r})"


# ===================================================================== brains
class LinearEvalBrain(ClassifierStages, ContinualBrain):
    """Linear classifier on the frozen encoder of each task.

    modules: ``classifier`` only (the optimiser sees nothing else); the frozen
    front end (``compute_features``, ``mean_var_norm``, ``embedding_model``)
    lives in hparams. The task loop gives it the clips of
    :class:`LinearEvalSets` (``linclf_train_type``).
    """

    future_eval_unsupported = ("linear / kNN evaluation: the protocol (linclf_train_type) names the tested tasks "
                               "and the probe's classes; the encoder run has the forward transfer")

    HPARAMS = {
        "compute_features": REQUIRED,
        "mean_var_norm": REQUIRED,
        "embedding_model": REQUIRED,
        "ssl_checkpoints_dir": REQUIRED,  # the save/ folder of the encoder run
        "task_classes": REQUIRED,
        "linclf_train_type": REQUIRED,
        "cache_embeddings": REQUIRED,  # False: re-encode every batch of every epoch
        "reinit_classifier": REQUIRED,  # a fresh classifier per task
        "eval_dataloader_opts": REQUIRED,  # also the batches of the embedding pass
        # False: argmax over all n_classes (cssl_sound); True: over the classes trained on.
        "mask_unseen_classes": REQUIRED,
        # last: the most recent (last-epoch) encoder of each task (cssl_sound); final: its CKPT+final.
        "encoder_checkpoint": REQUIRED,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache = None  # EmbeddingCache of the current task
        self.n_encoded = 0  # clips run through the encoder (all tasks, this process)
        self._probe = None

    # ---------------------------------------------------------------- encoder
    @property
    def front_end(self):
        return [self.hparams.compute_features, self.hparams.mean_var_norm, self.hparams.embedding_model]

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.load_frozen_encoder(task_id)
        if self.hparams.reinit_classifier and "classifier" in self.modules:
            torch.manual_seed(derive_seed(self.hparams.seed, task_id, "classifier"))
            for layer in self.modules.classifier.modules():
                if layer is not self.modules.classifier and hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()

    def load_frozen_encoder(self, task_id):
        """Load the encoder of ``<ssl_checkpoints_dir>/task{task_id}`` into the frozen front end."""
        root = self.hparams.ssl_checkpoints_dir
        n_tasks = len(self.hparams.task_classes)
        missing = [k for k in range(n_tasks) if not os.path.isdir(os.path.join(root, f"task{k}"))]
        if missing:
            found = encoder_tasks_found(root)
            raise FileNotFoundError(
                f"no encoder checkpoint for task {missing[0]}: expected the folder "
                f"{os.path.join(root, f'task{missing[0]}')}; tasks found in {root}: {found if found else 'none'} "
                f"({n_tasks} tasks in task_classes)"
            )
        self.encoder_ckpt = load_encoder(
            root,
            task_id,
            {"embedding_model": self.hparams.embedding_model, "normalizer": self.hparams.mean_var_norm},
            which=self.hparams.encoder_checkpoint,
        )
        self.freeze_front_end()
        logger.info("task %d: encoder from %s", task_id, self.encoder_ckpt.path)

    def freeze_front_end(self):
        """Front end on the device, in eval mode, without gradients; the embeddings' fingerprint forgotten."""
        for module in self.front_end:
            if isinstance(module, torch.nn.Module):
                module.to(self.device)
                module.eval()
                module.requires_grad_(False)
        self._probe = None
        self.cache = None

    @torch.no_grad()
    def encode(self, wavs, lens):
        """Embeddings of a batch of waveforms with the frozen encoder.

        Clips are encoded in groups of equal length, never zero-padded, so a
        clip's embedding does not depend on its batch-mates.

        Arguments
        ---------
        wavs : torch.Tensor [batch, samples]
        lens : torch.Tensor [batch], relative lengths

        Returns
        -------
        torch.Tensor [batch, emb_dim] (float32, on wavs' device)
        """
        n_samples = torch.round(lens * wavs.shape[1]).long().clamp(min=1)
        out = None
        for length in torch.unique(n_samples).tolist():
            index = (n_samples == length).nonzero(as_tuple=True)[0]
            group = wavs[index, :length]
            ones = torch.ones(group.shape[0], device=wavs.device)
            feats = self.hparams.compute_features(group)
            feats = self.hparams.mean_var_norm(feats, ones)
            emb = self.hparams.embedding_model(feats, ones).float()
            if out is None:
                out = torch.empty(wavs.shape[0], emb.shape[-1], device=wavs.device)
            out[index] = emb
        self.n_encoded += int(wavs.shape[0])
        return out

    def encoder_fingerprint(self):
        """What the cached embeddings depend on: the checkpoint files and a probe embedding [1, emb_dim]."""
        if self._probe is None:
            generator = torch.Generator().manual_seed(0)
            wav = peak_normalize(torch.randn(self.hparams.audio.sample_rate, generator=generator))
            n_encoded = self.n_encoded  # counts data clips only
            self._probe = self.encode(wav[None].to(self.device), torch.ones(1, device=self.device)).cpu()
            self.n_encoded = n_encoded
        stamps = sorted(file_stamp(path) for path in self.encoder_files())
        return {"version": EMBEDDINGS_VERSION, "checkpoint": stamps}, self._probe

    def encoder_files(self):
        """The files the frozen encoder was loaded from (their stamps key the embedding cache)."""
        return list(self.encoder_ckpt.paramfiles.values())

    # ------------------------------------------------------ embedding cache
    def prepare_task_data(self, task_dir, task_data):
        # The classifier predicts the classes it is trained on ("full": all of them).
        self.seen_classes = sorted({int(row["class_idx"]) for row in task_data.train})
        if not self.hparams.cache_embeddings:
            return
        tests = [r for j in task_data.test_tasks for r in task_data.test[j]]
        self.fill_cache(os.path.join(task_dir, EMBEDDINGS_FILE), [*task_data.train, *task_data.valid, *tests])

    def fill_cache(self, path, rows):
        """``self.cache``: the embedding cache in ``path``, holding every clip of ``rows`` (each encoded once)."""
        unique = {}
        for row in rows:
            unique.setdefault(row["ID"], row)
        self.cache = EmbeddingCache(path, self.encoder_fingerprint())
        run_on_main(lambda: self.cache.load().fill(list(unique.values()), self.embed_rows))
        if not if_main_process():
            self.cache.load()

    def embed_rows(self, rows):
        """Encode manifest rows (full clips) in batches sorted by length.

        Returns (ids in the order encoded, embeddings [n_rows, emb_dim] on CPU).
        """
        rows = sorted(rows, key=lambda r: (float(r["duration"]), r["ID"]))
        dataset = make_dataset(rows, self.hparams.audio, train=False)
        loader = sb.dataio.dataloader.make_dataloader(dataset, **dict(self.hparams.eval_dataloader_opts))
        ids, chunks = [], []
        for batch in loader:
            batch = batch.to(self.device)
            wavs, lens = batch.sig
            chunks.append(self.encode(wavs, lens).cpu())
            ids.extend(batch.id)
        return ids, torch.cat(chunks)

    def make_task_dataset(self, rows, train):
        """Data set of the task loop: items ``id``, ``emb`` [emb_dim] (cached) or ``sig``, ``class_idx``."""
        if not self.hparams.cache_embeddings:
            # Full clips, no crops, no augmentation: the same input as the cache.
            return make_dataset(rows, self.hparams.audio, train=False)
        data = {row["ID"]: dict(row) for row in rows}
        missing = [i for i in data if i not in self.cache]
        if missing:
            raise KeyError(f"no cached embedding for {len(missing)} clips, e.g. {missing[:3]}")
        dataset = sb.dataio.dataset.DynamicItemDataset(data)
        cache = self.cache

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("emb")
        def lookup(clip_id):
            return cache[clip_id]

        sb.dataio.dataset.add_dynamic_item([dataset], lookup)
        sb.dataio.dataset.set_output_keys([dataset], ["id", "emb", "class_idx"])
        return dataset

    def batch_embeddings(self, batch):
        """[batch, emb_dim] embeddings of a batch: cached, or encoded now."""
        if hasattr(batch, "emb"):
            return batch.emb.data
        wavs, lens = batch.sig
        return self.encode(wavs, lens)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        if stage == sb.Stage.TRAIN and self.hparams.linclf_train_type in BALANCED_SAMPLING_TYPES:
            # Class-balanced sampling (a class uniformly, then one of its clips, with
            # replacement: cssl_sound's class_balanced_dataio_prep): in buffer the
            # current task has all its clips, the buffer few of each earlier class.
            labels = [int(dataset.data[i]["class_idx"]) for i in dataset.data_ids]
            counts = np.bincount(labels)
            weights = [1.0 / counts[c] for c in labels]
            loader_kwargs.pop("shuffle", None)
            self.train_sampler = ReproducibleWeightedRandomSampler(
                weights, num_samples=len(labels), replacement=True,
                seed=derive_seed(self.hparams.seed, self.task_id, "balanced"),
            )
            loader_kwargs["sampler"] = self.train_sampler
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    # ------------------------------------------------------------- training
    def compute_forward(self, batch, stage):
        """Logits [batch, n_classes]; with ``mask_unseen_classes``, classes not trained on masked."""
        batch = batch.to(self.device)
        logits = self.modules.classifier(self.batch_embeddings(batch))
        if self.hparams.mask_unseen_classes:
            logits = logits.masked_fill(~self.seen_mask(logits.device), UNSEEN_LOGIT)
        return logits, None, 1.0


class ScoringEvalBrain(LinearEvalBrain):
    """A :class:`LinearEvalBrain` whose scores come from a rule, not a trained layer (kNN, NCM, RanPAC).

    ``compute_forward`` gives the scores [batch, n_classes]; the loss is a constant zero (nothing
    is trained by gradient), the accuracy is recorded as in linear evaluation.
    """

    def compute_objectives(self, scores, batch, stage):
        targets = torch.as_tensor(batch.class_idx, dtype=torch.long, device=scores.device)
        self.record_predictions(scores, targets)
        return torch.zeros((), device=scores.device)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        self.last_stage_stats = {"acc": self.stage_accuracy()}
