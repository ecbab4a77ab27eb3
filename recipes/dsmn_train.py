#!/usr/bin/env python3
"""DSMN scene classification (multi-task scenes + scene groups), then float32 vs int8 evaluation.

    python recipes/dsmn_train.py hparams/synth/dsmn_train.yaml
    python recipes/dsmn_train.py hparams/tau22/dsmn_train.yaml --data_folder=/data/TAU-urban-acoustic-scenes-2022-mobile-development
    python recipes/dsmn_train.py hparams/synth/dsmn_train.yaml --teacher=<TEACHER_OUTPUT_FOLDER> --qat=True

Training runs through the shared task loop (one task holding every scene, or a
class-incremental split), optionally distilling a ``teacher``'s logits (computed
once per clip, cached in save/teacher_logits.pt; soundcl.ondevice.distill); afterwards the
final model is quantized to int8 (post-training static quantization) and, with
``qat=True``, fine-tuned for ``qat_epochs`` with fake quantization and converted;
float32, PTQ int8, QAT int8 (and the teacher's) test accuracy: quantized.json.
"""

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

from soundcl.core.ddp import run_script
from soundcl.ondevice import distill, export as ondevice
from soundcl.core import recipe
from soundcl.memory.policies import NoMemory
from soundcl.methods.scene.brains import SceneBrain
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.core.task_loop import TaskLoop

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, SceneBrain, CurrentTaskWithMemory, ondevice, distill]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    distill.check_hparams(preview)
    ondevice.check_hparams(preview)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    train_rows = [row for rows in task_rows["train"] for row in rows]
    test_rows = [row for rows in task_rows["test"] for row in rows]

    # 3. Training through the task loop (no replay memory), learning from the teacher's cached logits.
    brain = SceneBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts)
    teacher_accuracy = None
    if hparams["teacher"]:
        args = {"teacher": hparams["teacher"], "n_classes": hparams["n_classes"], "save_folder": hparams["save_folder"]}
        # The main process scores the clips once and writes the cache; every process then reads it.
        run_on_main(distill.cache_teacher_logits, kwargs={**args, "train_rows": train_rows, "test_rows": test_rows})
        brain.teacher_logits = distill.teacher_logits(rows=train_rows, **args)
        teacher_accuracy = distill.teacher_accuracy(test_rows=test_rows, **args)
    loop = TaskLoop(brain, task_rows, task_data=CurrentTaskWithMemory(), memory=NoMemory(), hparams=hparams)
    results = loop.run()

    # 4. The final model quantized to int8 (PTQ, and QAT), tested beside float32.
    if hparams["quantize"] and results is not None and not results["partial"]:
        loop.load_final_weights(loop.n_tasks - 1)  # the models hold nothing if every task was skipped
        qat_model = None
        if hparams["qat"]:
            qat_model = ondevice.quantization_aware_training(
                brain, train_rows, hparams["audio"], hparams["train_dataloader_opts"], hparams["qat_epochs"],
                hparams["qat_lr"], backend=hparams["quantization_backend"], teacher_logits=brain.teacher_logits,
                kd_weight=hparams["kd_weight"], kd_temperature=hparams["kd_temperature"], seed=hparams["seed"],
            )
        results["quantized"] = ondevice.evaluate_int8(
            brain,
            train_rows,
            test_rows,
            hparams["audio"],
            hparams["eval_dataloader_opts"],
            hparams["output_folder"],
            backend=hparams["quantization_backend"],
            calibration_batches=hparams["calibration_batches"],
            qat_model=qat_model,
            teacher_accuracy=teacher_accuracy,
        )
    return results


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
