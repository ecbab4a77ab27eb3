"""Sequential transfer: several data sets in a row, each one stage (= one task of the loop).

:func:`prepare` runs each stage's own ``prepare`` (e.g. CochlScene, then TAU
2022 Mobile) into ``<save_folder>/stage{k}_data/``, merges all tasks of a stage
into one, shifts its class indices past those of the earlier stages (disjoint
label spaces: 0..12 CochlScene, 13..22 TAU 2022) and writes
``<save_folder>/{train,valid,test}_task{k}.csv`` like any prepare module.
"""
import logging
import os

from soundcl.data.manifest import read_manifest, write_manifest

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def prepare(save_folder, stages):
    """Prepare every stage and write one task manifest per stage.

    Arguments
    ---------
    save_folder : str
    stages : list of callables
        ``stage(save_folder=...)`` -> the dict of a soundcl prepare module
        (``classes``, ``manifests``), e.g. ``!name:soundcl.data.cochl.prepare``
        with its data folder bound in YAML.

    Returns
    -------
    dict: ``classes`` (all stages, in class-index order), ``n_tasks`` (number of
    stages), ``stage_n_classes``, ``task_classes`` and ``manifests``.
    """
    if not stages:
        raise ValueError("transfer.prepare needs at least one stage")
    os.makedirs(save_folder, exist_ok=True)
    classes, stage_n_classes, task_classes = [], [], []
    manifests = {split: [] for split in SPLITS}
    for k, stage in enumerate(stages):
        info = stage(save_folder=os.path.join(save_folder, f"stage{k}_data"))
        offset = len(classes)
        stage_classes = list(info["classes"])
        classes.extend(stage_classes)
        stage_n_classes.append(len(stage_classes))
        used = set()
        for split in SPLITS:
            rows, extra = [], []
            for path in info["manifests"].get(split, []):
                for row in read_manifest(path):
                    row = dict(row)
                    row["class_idx"] = int(row["class_idx"]) + offset
                    used.add(row["class_idx"])
                    extra.extend(f for f in row if f not in extra)
                    rows.append(row)
            if split != "valid" and not rows:
                raise ValueError(f"stage {k} ({stage!r}) has no {split} clips")
            out = os.path.join(save_folder, f"{split}_task{k}.csv")
            write_manifest(out, rows, extra_fields=extra)
            manifests[split].append(out)
        task_classes.append(sorted(used))
        logger.info("stage %d: %d classes (indices %d..%d)", k, len(stage_classes), offset, offset + len(stage_classes) - 1)
    return {
        "classes": classes,
        "n_tasks": len(stages),
        "stage_n_classes": stage_n_classes,
        "task_classes": task_classes,
        "manifests": manifests,
    }
