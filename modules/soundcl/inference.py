"""Classify audio with a finished (or partly finished) soundcl run, SpeechBrain style.

Every run writes ``inference.yaml`` into its output folder (:func:`write_inference_yaml`,
called by the task loop) next to ``train_hparams.yaml``, the recipe's YAML as it was
given (:func:`save_training_config`). :class:`ContinualClassifier` is a
``speechbrain.inference.interfaces.Pretrained`` built from them::

    from soundcl.inference import ContinualClassifier

    classifier = ContinualClassifier.from_hparams(source="results/synth/sup_train_replay0/1986")
    out = classifier.classify_file("clip.wav")         # out.labels[0], out.top_k[0], out.probs
    out = classifier.classify_batch(wavs, wav_lens)    # [batch, samples], relative lengths

It rebuilds the recipe's modules from the run's YAML and command-line overrides,
builds the run's own Brain, loads ``save/task<k>/CKPT+final`` (default: the last
finished task) exactly as the task loop does before testing, and scores with the
Brain's own ``compute_forward`` in the TEST stage (front end, normaliser, encoder,
head, masking of unseen classes), so a clip gets the scores the recipe's test loop
gives it. Audio is read by the run's :class:`soundcl.data.audio.AudioPipeline` (decode,
downmix, resample, peak-normalise, the whole clip).

Scores are over the classes learned up to task ``k`` (``classes``), in class-index order
(``classes="all"``: every output of the head, as the test loop of a run that does not mask
unseen classes takes its argmax).
The encoders convolve over padding, so a clip's scores move slightly (~1e-2) with the
length of its batch-mates: :meth:`ContinualClassifier.classify_file` scores a clip
alone; :meth:`ContinualClassifier.classify_files` batches as the run's test loop
(``eval_dataloader_opts``), which gives its logits, and its accuracy, exactly.

Command line: ``python -m soundcl.predict RUN_DIR FILE_OR_FOLDER ...`` (:mod:`soundcl.predict`).
"""
import contextlib
import importlib
import json
import logging
import os
import sys
from typing import NamedTuple

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb
from speechbrain.inference.interfaces import Pretrained

# soundcl internals: the only imports of this module (paths may change with the package layout).
from soundcl.data.audio import AudioReadError, make_dataset
from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.core.continual import ContinualBrain
from soundcl.base.contract import REQUIRED, ConfigError, check_declared, with_defaults

logger = logging.getLogger(__name__)

from soundcl.core.run_files import (  # noqa: F401  (the files runs write; re-exported)
    INFERENCE_FILE, TRAIN_CONFIG_FILE, TRAIN_HPARAMS_FILE, importable_class, save_training_config, write_inference_yaml,
)

#: Names the task loop uses (soundcl.core.task_loop); read back here.
TASK_STATE_FILE = "task_state.json"
FINAL_CKPT_NAME = "final"

#: What the interface reads of a run's hparams (besides its Brain's own HPARAMS).
HPARAMS = {
    "output_folder": REQUIRED,
    "audio": REQUIRED,  # the run's soundcl.data.audio.AudioPipeline
    "modules": REQUIRED,
    "opt_class": REQUIRED,
    "checkpoint_recoverables": REQUIRED,  # what CKPT+final holds
    "eval_dataloader_opts": REQUIRED,  # classify_files batches as the test loop
}

#: Columns of the scores: the classes learned so far, or every output of the run's head.
CLASS_SETS = ("seen", "all")


class RunNotReady(RuntimeError):
    """A run folder that cannot classify yet (no inference.yaml, no finished task ...); one line."""


# ================================================================== reading a run
def read_inference_yaml(run_folder):
    """The ``inference.yaml`` of ``run_folder`` as a dict; :class:`RunNotReady` when there is none."""
    path = os.path.join(run_folder, INFERENCE_FILE)
    if not os.path.isfile(path):
        if not os.path.isdir(run_folder):
            raise RunNotReady(f"{run_folder} is not a folder (expected a run's output folder)")
        raise RunNotReady(
            f"{run_folder} has no {INFERENCE_FILE}: not a soundcl run folder, or one made before runs "
            f"wrote it (rerun the run's command: finished tasks are skipped, and the file is written)"
        )
    with open(path, encoding="utf-8") as fin:
        return ruamel.yaml.YAML(typ="safe", pure=True).load(fin)


def finished_tasks(run_folder, info):
    """Indices of the tasks of the run whose ``task_state.json`` says finished."""
    done = []
    for k in range(len(info["task_classes"])):
        state = _task_state(run_folder, info, k)
        if state is not None and state.get("finished"):
            done.append(k)
    return done


def _task_dir(run_folder, info, k):
    return os.path.join(run_folder, "save", info["task_dir_format"].format(k))


def _task_state(run_folder, info, k):
    path = os.path.join(_task_dir(run_folder, info, k), TASK_STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def choose_task(run_folder, info, task=None):
    """The task whose final checkpoint is used: ``task``, or the last finished one."""
    done = finished_tasks(run_folder, info)
    if not done:
        raise RunNotReady(f"{run_folder} has no finished task yet (no save/task<k>/{TASK_STATE_FILE}): "
                          f"nothing to classify with")
    if task is None:
        return done[-1]
    if int(task) not in done:
        raise RunNotReady(f"task {task} of {run_folder} is not finished: finished tasks are {done}")
    return int(task)


def seen_classes(run_folder, info, k):
    """Classes learned up to task ``k``: as the run tested them (task_state.json), else tasks 0..k."""
    state = _task_state(run_folder, info, k) or {}
    recorded = state.get("stats", {}).get("seen_classes")
    if recorded is not None:
        return sorted(int(c) for c in recorded)
    return sorted(int(c) for j in range(k + 1) for c in info["task_classes"][j])


@contextlib.contextmanager
def _working_folder(folder):
    """Run in ``folder`` (where the run ran: the YAML's relative paths are relative to it), if it exists."""
    before = os.getcwd()
    if folder and os.path.isdir(folder):
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def import_object(dotted):
    """The object named ``module.attr`` (e.g. a Brain class recorded in inference.yaml)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_run_hparams(run_folder, info, extra_overrides=None):
    """The run's hparams, built from its YAML and overrides (output folder: ``run_folder``).

    ``n_classes`` and ``task_classes`` are the run's recorded values (a YAML may compute them
    from the data folder at load, e.g. ``hparams/folder/``); the audio pipeline caches nothing.
    """
    run_folder = os.path.abspath(run_folder)
    with open(os.path.join(run_folder, info["hparams_file"]), encoding="utf-8") as fin:
        text = fin.read()
    keys = {line.split(":", 1)[0] for line in text.splitlines() if line[:1].isalpha() and ":" in line}
    overrides = dict(info["overrides"])
    overrides["output_folder"] = run_folder
    for key in ("n_classes", "task_classes"):
        if key in keys:
            overrides[key] = info[key]
    if "audio_cache" in keys:
        overrides["audio_cache"] = None
    overrides.update(extra_overrides or {})
    with _working_folder(info.get("training_cwd")):
        hparams = load_hyperpyyaml(text, overrides)
    return hparams


def build_brain(run_folder, info, task, run_opts=None, hparams=None):
    """The run's Brain holding the final weights of ``task``, ready to test (eval mode).

    Follows the task loop: ``begin_task(k, seen)`` (e.g. linear evaluation loads the
    encoder of task ``k`` there), the classes the run tested on, ``CKPT+final`` of the
    ``checkpoint_recoverables``.
    """
    brain_class = import_object(info["brain"])
    # Brains whose test scores need the training clips (kNN banks, class means) are not served.
    # A Brain whose TEST-stage compute_forward gives its scores by itself (its overrides only report
    # more) says so with SCORES_IN_COMPUTE_FORWARD (e.g. the DCASE baseline's domain selection).
    unsupported = [name for name in ("before_testing", "evaluate_accuracy")
                   if getattr(brain_class, name) is not getattr(ContinualBrain, name)
                   and not getattr(brain_class, "SCORES_IN_COMPUTE_FORWARD", False)]
    unsupported += ["kNN bank" for klass in brain_class.__mro__ if klass.__name__ == "KnnEvalBrain"]
    unsupported += ["class statistics (not checkpointed)" for klass in brain_class.__mro__
                    if klass.__name__ == "FrozenHeadBrain"]  # NCM / RanPAC (soundcl.methods.evaluation.frozen_cil)
    if unsupported:
        raise RunNotReady(
            f"{brain_class.__name__} tests with its own {unsupported[0]} (e.g. kNN or nearest-mean scoring, which "
            f"need the training clips): classify with a linear-evaluation run of its encoder "
            f"(recipes/linclf_train.py --ssl_checkpoints_dir=<this run>/save)"
        )
    if hparams is None:
        hparams = load_run_hparams(run_folder, info)
    try:
        check_declared(hparams, [sys.modules[__name__], brain_class], os.path.join(run_folder, info["hparams_file"]))
    except ConfigError as err:
        raise RunNotReady(str(err)) from None
    hparams = with_defaults(hparams, [brain_class])
    hparams.setdefault("task_dir_format", info["task_dir_format"])
    run_opts = {"noprogressbar": True, **(run_opts or {})}
    with _working_folder(info.get("training_cwd")):
        brain = brain_class(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
                            run_opts=run_opts)
        brain.task_classes = [list(t) for t in info["task_classes"]]
        seen = seen_classes(run_folder, info, task)
        brain.begin_task(task, seen)
        brain.seen_classes = seen
        checkpointer = SafeCheckpointer(_task_dir(run_folder, info, task),
                                        recoverables=dict(hparams["checkpoint_recoverables"]))
        if checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME)) is None:
            raise RunNotReady(f"task {task} of {run_folder} is marked finished but holds no CKPT+final")
    brain.modules.eval()
    return brain, hparams


# ================================================================== the interface
class Classification(NamedTuple):
    """Scores of a batch over the classes learned so far (columns in ``classes`` order).

    logits : torch.Tensor [batch, n_seen], the model's scores (those the test loop takes the argmax of)
    probs : torch.Tensor [batch, n_seen], their softmax
    class_idx : list of int, the top class of each clip (the data set's class index)
    labels : list of str, its name
    top_k : list (per clip) of [(name, probability), ...], best first
    classes : list of str, the names of the columns
    """

    logits: torch.Tensor
    probs: torch.Tensor
    class_idx: list
    labels: list
    top_k: list
    classes: list


class ContinualClassifier(Pretrained):
    """A run's model after task ``task``, classifying clips over the classes learned so far.

    Build it with :meth:`from_hparams` (``source``: the run's output folder). Attributes:
    ``task`` (the task whose ``CKPT+final`` is loaded), ``classes`` (names of the learned
    classes, in class-index order), ``class_indices`` (their indices), ``brain`` (the run's
    Brain), ``audio`` (the run's audio pipeline), ``run_folder``, ``info`` (inference.yaml).
    """

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True, brain=None,
                 run_folder=None, info=None, task=None, top_k=3, classes="seen"):
        super().__init__(modules=modules, hparams=hparams, run_opts=run_opts, freeze_params=freeze_params)
        if classes not in CLASS_SETS:
            raise ValueError(f"classes={classes!r} is not valid: expected one of {', '.join(CLASS_SETS)}")
        self.brain = brain
        self.run_folder = run_folder
        self.info = info
        self.task = task
        self.top_k = int(top_k)
        self.audio = hparams["audio"]
        self.class_indices = list(brain.seen_classes) if classes == "seen" else list(range(int(info["n_classes"])))
        self.classes = [info["classes"][c] for c in self.class_indices]

    @classmethod
    def from_hparams(cls, source, hparams_file=INFERENCE_FILE, savedir=None, task=None, run_opts=None,
                     top_k=3, classes="seen", **kwargs):
        """Load the run in folder ``source`` after task ``task`` (default: the last finished one).

        Arguments
        ---------
        source : str, a run's output folder (``<output_base>/<experiment_name>/<seed>``)
        hparams_file : str, the interface file in it (``inference.yaml``)
        savedir : unused (the run folder is local; SpeechBrain's signature)
        task : int or None
        run_opts : dict, e.g. ``{"device": "cuda:0"}``
        top_k : int, default number of classes in ``top_k``
        classes : str
            ``seen`` (default): scores over the classes learned up to the task; ``all``: over every
            output of the head, as the test loop of a run with ``mask_unseen_classes: False`` takes
            its argmax (e.g. cssl_sound's protocol in hparams/us8k): its accuracy for any run.
        """
        run_folder = os.path.abspath(str(source))
        info = read_inference_yaml(run_folder) if hparams_file == INFERENCE_FILE else _read_yaml(
            os.path.join(run_folder, hparams_file))
        k = choose_task(run_folder, info, task)
        brain, hparams = build_brain(run_folder, info, k, run_opts=run_opts)
        return cls(modules=dict(brain.modules), hparams=hparams, run_opts={"device": str(brain.device)},
                   brain=brain, run_folder=run_folder, info=info, task=k, top_k=top_k, classes=classes, **kwargs)

    # ------------------------------------------------------------------ scoring
    def load_audio(self, path):
        """The clip as the run reads it: [samples] at the run's rate (soundcl.data.audio.AudioReadError if not audio)."""
        return self.audio.load(str(path))

    @torch.no_grad()
    def logits_of_batch(self, batch):
        """Logits [batch, n_classes] of a SpeechBrain batch (``sig``, ``id``) by the Brain's TEST forward."""
        brain = self.brain
        brain.modules.eval()
        with brain.evaluation_ctx:
            out = brain.compute_forward(batch, sb.Stage.TEST)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        return logits.detach().float()

    def _result(self, logits, top_k):
        top_k = self.top_k if top_k is None else int(top_k)
        scores = logits[:, self.class_indices].cpu()
        probs = torch.softmax(scores, dim=-1)
        best = scores.argmax(dim=-1).tolist()
        ranked = probs.argsort(dim=-1, descending=True)[:, :max(1, top_k)].tolist()
        return Classification(
            logits=scores, probs=probs,
            class_idx=[self.class_indices[i] for i in best], labels=[self.classes[i] for i in best],
            top_k=[[(self.classes[i], float(probs[n, i])) for i in row] for n, row in enumerate(ranked)],
            classes=list(self.classes),
        )

    def classify_batch(self, wavs, wav_lens=None, top_k=None):
        """Classify a batch of waveforms at the run's sample rate.

        Arguments
        ---------
        wavs : torch.Tensor [batch, samples] (or [samples]), peak-normalised as the run's audio pipeline does
        wav_lens : torch.Tensor [batch], relative lengths (None: all full)
        top_k : int, classes in ``top_k`` (default: the interface's)

        Returns
        -------
        :class:`Classification`
        """
        wavs = torch.as_tensor(wavs, dtype=torch.float32)
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        batch = _WaveBatch(wavs.to(self.device), torch.as_tensor(wav_lens, dtype=torch.float32).to(self.device))
        return self._result(self.logits_of_batch(batch), top_k)

    def classify_file(self, path, top_k=None):
        """Classify one audio file (any format libsndfile reads, any rate and channel count), alone.

        Returns
        -------
        :class:`Classification` of one clip: ``labels[0]``, ``top_k[0]``, ``probs[0]``.
        """
        return self.classify_batch(self.load_audio(path), top_k=top_k)

    def classify_files(self, paths, batch_size=None, top_k=None):
        """Classify files in batches as the run's test loop does (``eval_dataloader_opts``, in the given order).

        Given a test manifest's files in order, the logits are those of the recipe's test loop.
        ``batch_size=1`` scores each clip alone (as :meth:`classify_file`).
        """
        rows = [{"ID": f"clip{i}", "wav": str(p), "duration": 0.0, "class_idx": -1} for i, p in enumerate(paths)]
        opts = dict(self.hparams.eval_dataloader_opts)
        opts["shuffle"] = False
        if batch_size is not None:
            opts["batch_size"] = int(batch_size)
        loader = self.brain.make_dataloader(make_dataset(rows, self.audio, train=False), sb.Stage.TEST,
                                            ckpt_prefix=None, **opts)
        chunks = [self.logits_of_batch(batch) for batch in loader]
        if not chunks:
            return self._result(torch.zeros(0, int(self.info["n_classes"])), top_k)
        return self._result(torch.cat(chunks), top_k)

    def forward(self, wavs, wav_lens=None):
        """Logits [batch, n_seen] over ``classes`` (SpeechBrain's convention: forward runs the model)."""
        return self.classify_batch(wavs, wav_lens).logits


class _WaveBatch:
    """A batch as the Brain's ``compute_forward`` reads it: ``sig`` (wavs, lens), ``id``, ``class_idx``."""

    def __init__(self, wavs, lens):
        self.sig = sb.dataio.batch.PaddedData(wavs, lens)
        self.id = [f"clip{i}" for i in range(wavs.shape[0])]
        self.class_idx = [-1] * wavs.shape[0]

    def to(self, device):
        self.sig = sb.dataio.batch.PaddedData(self.sig.data.to(device), self.sig.lengths.to(device))
        return self


def _read_yaml(path):
    with open(path, encoding="utf-8") as fin:
        return ruamel.yaml.YAML(typ="safe", pure=True).load(fin)


__all__ = ["ContinualClassifier", "Classification", "RunNotReady", "AudioReadError", "INFERENCE_FILE"]
