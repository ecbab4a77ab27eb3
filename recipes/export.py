#!/usr/bin/env python3
"""Export a trained run's model to ONNX, waveform to label, and check it with onnxruntime.

    python recipes/export.py results/synth/dsmn_train/1986
    python recipes/export.py results/synth/dsmn_train/1986 --format=onnx_int8

Loads the run as :class:`soundcl.inference.ContinualClassifier` does (its ``inference.yaml``,
the final checkpoint of the last finished task, or ``--task``) and writes into the run folder:

* ``waveform.onnx`` (``--format=onnx``) / ``waveform_int8.onnx`` (``--format=onnx_int8``): the whole
  path, ``waveform`` float32 [batch, samples] (mono, the run's sample rate; dynamic batch and length)
  -> ``probs`` [batch, n_seen_classes] (peak normalisation, log-mel front end, normaliser, encoder,
  head, softmax over the classes learned so far; :mod:`soundcl.ondevice.waveform`), the class names
  and the front end's parameters in its metadata and in ``waveform[_int8].json`` beside it;
  ``waveform_check.json`` / ``waveform_int8_check.json``: onnxruntime (one thread) against the
  PyTorch path on every test clip (float32: ``ContinualClassifier.classify_batch``'s
  probabilities, max abs difference <= ``--tolerance``; int8: top-1 agreement with PyTorch's int8 model);
* ``model.onnx`` (normalised filterbanks [batch, time, n_mels] -> logits, front end excluded),
  ``labels.txt`` and ``export_check.json`` (max |onnxruntime - PyTorch| logits); with
  ``--format=onnx_int8`` ``model_int8.onnx`` and ``export_int8_check.json``.

The int8 model is the run's own (``soundcl.ondevice.export.run_int8_model``): the converted QAT model
of a ``--qat=True`` run (``model_int8_qat.pt``), else the recipe's post-training int8 model
(``model_int8.pt``), exported as a QDQ graph with its own weights and scales
(:mod:`soundcl.ondevice.qdq`). int8 needs an encoder prepared for eager-mode quantization (DSMN).
"""
import argparse
import json
import logging
import os

import torch

import speechbrain as sb

from soundcl.core.ddp import run_script
from soundcl.data.manifest import read_manifest
from soundcl.inference import ContinualClassifier
from soundcl.ondevice import qdq, quantize, waveform
from soundcl.ondevice.export import export, export_int8, scene_model

logger = logging.getLogger(__name__)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_folder")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="float32: largest |onnxruntime - PyTorch| (logits of model.onnx; probabilities "
                             "of waveform.onnx)")
    parser.add_argument("--task", type=int, default=None, help="task whose final model is exported (default: last)")
    parser.add_argument("--format", choices=("onnx", "onnx_int8"), default="onnx",
                        help="onnx: float32; onnx_int8: the run's int8 model (QAT, else PTQ) as QDQ")
    parser.add_argument("--min_agreement", type=float, default=0.99,
                        help="onnx_int8: top-1 agreement with PyTorch's int8 model below which a warning is given")
    args = parser.parse_args(argv)
    classifier = ContinualClassifier.from_hparams(source=args.output_folder, task=args.task)
    brain, hparams, task = classifier.brain, vars(classifier.hparams), classifier.task
    brain.device = "cpu"
    brain.modules.cpu().eval()
    folder = classifier.run_folder
    rows = {split: [row for k in range(task + 1)
                    for row in read_manifest(os.path.join(hparams["save_folder"], f"{split}_task{k}.csv"))]
            for split in ("train", "test")}
    labels = [classifier.info["classes"][i] for i in range(int(hparams["n_classes"]))]
    audio, loader = hparams["audio"], hparams["eval_dataloader_opts"]
    wavs = [audio.load(row["wav"]) for row in rows["test"]]
    front_end, normalizer, config = waveform.export_front_end(brain.modules.compute_features,
                                                              brain.modules.mean_var_norm)
    ship = dict(front_end=front_end, normalizer=normalizer, config=config, class_indices=classifier.class_indices,
                classes=classifier.classes, sample_rate=audio.sample_rate, peak_normalize=audio.normalize)
    if args.format == "onnx_int8":
        for key in ("quantization_backend", "calibration_batches"):
            if key not in hparams:
                raise KeyError(f"{folder} has no {key!r} in its hparams: onnx_int8 needs the run's int8 settings")
        result, int8 = export_int8(brain, rows["train"], rows["test"], audio, loader, folder, labels,
                                   backend=hparams["quantization_backend"],
                                   calibration_batches=hparams["calibration_batches"], min_agreement=args.min_agreement)
        path = os.path.join(folder, "waveform_int8.onnx")
        twin = qdq.qdq_twin(int8, (torch.zeros(1, 101, config["n_mels"]), None))
        waveform.write_waveform_model(path, model=twin, kind=f"int8 QDQ: the run's {result['int8_model']}", **ship)
        check = waveform.compare_with_reference(path, wavs, _int8_reference(brain, int8, classifier.class_indices))
        check.update(min_agreement=args.min_agreement, ok=check["top1_agreement"] >= args.min_agreement,
                     reference="PyTorch: the run's front end + its int8 model, softmax over the seen classes")
        if not check["ok"]:
            logger.warning("waveform_int8.onnx agrees with PyTorch's int8 path on %.1f %% of %d clips (< %.0f %%)",
                           100 * check["top1_agreement"], check["n_clips"], 100 * args.min_agreement)
    else:
        result = export(brain, rows["test"], audio, loader, folder, labels, args.tolerance)
        path = os.path.join(folder, "waveform.onnx")
        waveform.write_waveform_model(path, model=scene_model(brain), kind="float32", **ship)
        check = waveform.compare_with_reference(path, wavs, lambda x: classifier.classify_batch(x).probs)
        check.update(tolerance=args.tolerance, ok=check["max_abs_prob_diff"] <= args.tolerance,
                     reference="soundcl.inference.ContinualClassifier.classify_batch probabilities")
        if not check["ok"]:
            raise RuntimeError(f"waveform.onnx probabilities differ from PyTorch's by {check['max_abs_prob_diff']:.3g}"
                               f" > {args.tolerance}")
    with open(path[: -len(".onnx")] + "_check.json", "w", encoding="utf-8") as f:
        json.dump(check, f, indent=1)
    logger.info("exported %s (%s): %s", path, config["type"], check)
    result["waveform"] = {"onnx": path, **check}
    return result


def _int8_reference(brain, int8, class_indices):
    """PyTorch's int8 path: wav [1, samples] -> probabilities over ``class_indices`` (the run's front end)."""
    @torch.no_grad()
    def reference(wav):
        feats = brain.compute_feats(wav, torch.ones(wav.shape[0]), sb.Stage.TEST)
        return torch.softmax(int8(feats, None)[:, list(class_indices)], dim=-1)

    return reference


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
