#!/usr/bin/env python3
"""Export a trained recipe's model to ONNX and check it with onnxruntime.

    python recipes/export.py results/synth/dsmn_train/1986
    python recipes/export.py results/synth/dsmn_train/1986 --format=onnx_int8

Reads ``<output_folder>/hyperparams.yaml`` (written by the training run, with its
overrides), loads the final checkpoint of the last task, writes
``model.onnx`` (normalised filterbanks [batch, time, n_mels] -> scene logits;
the filterbank front end is NOT included), ``labels.txt`` (one label per class
index) and ``export_check.json`` (max |onnxruntime - PyTorch| over the test
clips; fails above ``--tolerance``).

``--format=onnx_int8`` writes ``model_int8.onnx``: the float model quantized
statically by onnxruntime (QDQ, int8 weights per channel, uint8 activations,
calibrated on the run's ``calibration_batches`` training batches), checked
against PyTorch's int8 model (post-training, the same batches): top-1 agreement
over the test clips must reach ``--min_agreement``; ``export_int8_check.json``
holds the check and the complexity (params, MACs per clip, int8 file size).
"""
import argparse
import logging
import os

from hyperpyyaml import load_hyperpyyaml

from soundcl.core.ddp import run_script
from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.data.manifest import read_manifest
from soundcl.core.task_loop import FINAL_CKPT_NAME
from soundcl.ondevice.export import export, export_int8
from soundcl.methods.scene.brains import SceneBrain


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_folder")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--task", type=int, default=None, help="task whose final model is exported (default: last)")
    parser.add_argument("--format", choices=("onnx", "onnx_int8"), default="onnx",
                        help="onnx: float32; onnx_int8: static int8 (QDQ), checked against PyTorch int8")
    parser.add_argument("--min_agreement", type=float, default=0.99,
                        help="onnx_int8: least top-1 agreement with PyTorch's int8 model on the test clips")
    args = parser.parse_args(argv)
    hparams_file = os.path.join(args.output_folder, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(f"{hparams_file} not found: give the output folder of a finished training run")
    with open(hparams_file, encoding="utf-8") as fin:
        # Training-only objects are not rebuilt (no data preparation, no augmentation).
        hparams = load_hyperpyyaml(fin, {"prepare_data": None, "augmentation": None})
    n_tasks = len(hparams.get("task_classes") or hparams["stage_n_classes"])
    task = n_tasks - 1 if args.task is None else args.task
    task_dir = os.path.join(hparams["save_folder"], hparams.get("task_dir_format", "task{}").format(task))
    checkpointer = SafeCheckpointer(task_dir, recoverables=hparams["checkpoint_recoverables"])
    if checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME)) is None:
        raise FileNotFoundError(f"{task_dir} holds no final checkpoint: is task {task} finished?")
    test_rows = [row for k in range(task + 1)
                 for row in read_manifest(os.path.join(hparams["save_folder"], f"test_task{k}.csv"))]
    train_rows = [row for k in range(task + 1)
                  for row in read_manifest(os.path.join(hparams["save_folder"], f"train_task{k}.csv"))]
    names = {}
    for row in test_rows:
        names[int(row["class_idx"])] = row["label"]
    labels = [names.get(i, f"class{i}") for i in range(hparams["n_classes"])]
    brain = SceneBrain(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}, checkpointer=None)
    if args.format == "onnx_int8":
        for key in ("quantization_backend", "calibration_batches"):
            if key not in hparams:
                raise KeyError(f"{hparams_file} has no {key!r}: onnx_int8 needs the run's int8 settings")
        return export_int8(brain, train_rows, test_rows, hparams["audio"], hparams["eval_dataloader_opts"],
                           args.output_folder, labels, backend=hparams["quantization_backend"],
                           calibration_batches=hparams["calibration_batches"], min_agreement=args.min_agreement)
    return export(brain, test_rows, hparams["audio"], hparams["eval_dataloader_opts"], args.output_folder,
                  labels, args.tolerance)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
