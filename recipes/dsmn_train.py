#!/usr/bin/env python3
"""DSMN scene classification (multi-task scenes + scene groups), then float32 vs int8 evaluation.

    python recipes/dsmn_train.py hparams/synth/dsmn_train.yaml
    python recipes/dsmn_train.py hparams/tau22/dsmn_train.yaml --data_folder=/data/TAU-urban-acoustic-scenes-2022-mobile-development

Training runs through the shared task loop (one task holding every scene, or a
class-incremental split); afterwards the final model is quantized to int8
(post-training static quantization) and both are tested: quantized.json.
"""
import sys

from soundcl.ondevice import evaluate_int8
from soundcl.recipe import build_task_loop, load_recipe, prepare_task_rows
from soundcl.scene_brains import SceneBrain


def main(argv=None):
    hparams, run_opts, _, _ = load_recipe(sys.argv[1:] if argv is None else argv)
    task_rows = prepare_task_rows(hparams)
    brain = SceneBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
                       run_opts=run_opts, checkpointer=None)
    loop = build_task_loop(brain, hparams, task_rows)
    results = loop.run()
    if hparams.get("quantize", False) and not (results or {}).get("partial", False):
        last = loop.n_tasks - 1
        loop.load_final_weights(last)  # the models may hold nothing if every task was skipped
        results["quantized"] = evaluate_int8(
            brain,
            [row for rows in task_rows["train"] for row in rows],
            [row for rows in task_rows["test"] for row in rows],
            hparams["audio"],
            hparams["eval_dataloader_opts"],
            hparams["output_folder"],
            backend=hparams.get("quantization_backend"),
            calibration_batches=hparams.get("calibration_batches", 20),
        )
    return results


if __name__ == "__main__":
    main()
