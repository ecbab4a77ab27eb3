#!/usr/bin/env python3
"""2-D maps (t-SNE / UMAP) of the test embeddings of every task-wise encoder checkpoint.

    python recipes/visualize.py hparams/synth/visualize.yaml --ssl_checkpoints_dir=<ENCODER_OUTPUT_FOLDER>/save

<ENCODER_OUTPUT_FOLDER> is the output folder of an encoder run (e.g.
results/synth/simclr_train_replay0/1986). For each task k: load the frozen encoder
of <ssl_checkpoints_dir>/task<k>, embed the test clips of every task once
(save/task<k>/embeddings.pt), map them to 2-D (``map_method``) and draw them
coloured by class, classes of tasks 0..k as dots and the others as faint crosses:
<output_folder>/maps/task<k>.png, then every task in <output_folder>/maps/grid.png
(soundcl.methods.evaluation.visualize). Row k of the accuracy matrix is the kNN accuracy of the
``seen`` protocol (as knn_eval.py), a by-product.
"""
import os

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from soundcl.core.ddp import run_script
from soundcl.core import recipe
from soundcl.methods.evaluation.linear_eval import LinearEvalSets
from soundcl.memory.policies import NoMemory
from soundcl.core.task_loop import TaskLoop
from soundcl.methods.evaluation.visualize import EmbeddingMapBrain, check_map_method, load_task_map, plot_grid

# What this recipe is made of; each part declares the hparams it reads.
NEEDS = [recipe, TaskLoop, EmbeddingMapBrain, LinearEvalSets]


def main(argv):
    # 1. Command line and YAML: a bad key or value stops here, in one line.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    preview = recipe.check_config(hparams_file, overrides, NEEDS)
    recipe.build(lambda h: check_map_method(h["map_method"]), preview)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = recipe.load_hparams(hparams_file, overrides, NEEDS)
    recipe.create_experiment_directory(hparams, hparams_file, overrides, preview)

    # 2. Data: manifests per task and split, prepared on the main process.
    task_rows = recipe.prepare_task_rows(hparams)

    # 3. The maps (and the kNN evaluation they come with) in the task loop.
    brain = EmbeddingMapBrain(modules=hparams["modules"], opt_class=hparams["opt_class"],
                                        hparams=hparams, run_opts=run_opts)
    brain.map_rows = [row for rows in task_rows["test"] for row in rows]
    brain.class_names = {int(r["class_idx"]): r.get("label", r["class_idx"]) for r in brain.map_rows}
    loop = TaskLoop(
        brain,
        task_rows,
        task_data=LinearEvalSets.from_hparams(hparams, with_valid=False),
        memory=NoMemory(),
        hparams=hparams,
    )
    results = loop.run()

    # 4. Every task's map in one picture.
    if if_main_process() and results is not None and not results.get("partial"):
        task_maps = [load_task_map(loop.task_dir(k)) for k in range(loop.n_tasks)]
        plot_grid(os.path.join(hparams["output_folder"], "maps", "grid.png"), task_maps,
                            hparams["n_classes"], brain.class_names)
    return results


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
