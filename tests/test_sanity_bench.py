"""bench/sanity.py: the spoken-word corpus builder (when espeak-ng and sox are there) and the ordering checks."""
import csv
import importlib.util
import os

import pytest

from conftest import REPO_ROOT


def _load_sanity():
    spec = importlib.util.spec_from_file_location("bench_sanity", os.path.join(REPO_ROOT, "bench", "sanity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sanity = _load_sanity()


def test_every_speaker_belongs_to_one_fold_and_file_names_are_unique():
    plan = sanity.clip_plan(clips_per_class_per_fold=2)
    assert len(plan) == 2 * len(sanity.WORDS) * sanity.N_FOLDS
    assert len({c["slice_file_name"] for c in plan}) == len(plan)
    fold_of_fsid = {}
    for clip in plan:
        assert fold_of_fsid.setdefault(clip["fsID"], clip["fold"]) == clip["fold"]
    folds_of_speaker = {}
    for clip in plan:
        folds_of_speaker.setdefault(clip["voice"], set()).add(clip["fold"])
    assert all(len(folds) == 1 for folds in folds_of_speaker.values())


def test_missing_tools_stop_the_build_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sanity.shutil, "which", lambda tool: None)
    with pytest.raises(SystemExit, match="apt-get install espeak-ng sox"):
        sanity.build_corpus(str(tmp_path / "corpus"), clips_per_class_per_fold=1)


@pytest.mark.skipif(bool(sanity.missing_tools()), reason=f"needs {' and '.join(sanity.REQUIRED_TOOLS)} "
                    "(apt-get install espeak-ng sox)")
def test_corpus_is_read_by_the_us8k_preparation_and_built_once(tmp_path):
    import soundfile

    from soundcl.data import us8k

    folder, words = str(tmp_path / "corpus"), sanity.WORDS[:3]
    sanity.build_corpus(folder, clips_per_class_per_fold=1, words=words)
    with open(os.path.join(folder, "metadata", "UrbanSound8K.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(words) * sanity.N_FOLDS
    formats = set()
    for row in rows:
        info = soundfile.info(os.path.join(folder, "audio", f"fold{row['fold']}", row["slice_file_name"]))
        formats.add((info.samplerate, info.channels, info.subtype))
        assert abs(info.duration - float(row["end"])) < 0.01
    assert len({f[0] for f in formats}) > 1 and len({f[1] for f in formats}) == 2 and len({f[2] for f in formats}) > 1
    result = us8k.prepare(folder, str(tmp_path / "prep"), task_classes=[[0, 1], [2]])
    assert result["classes"] == words

    marker = os.path.join(folder, sanity.MARKER)
    before = os.path.getmtime(marker)
    sanity.build_corpus(folder, clips_per_class_per_fold=1, words=words)  # reused, not rebuilt
    assert os.path.getmtime(marker) == before

    # Rebuilt elsewhere, byte for byte the same audio (noise and dither seeded): a rerun of the bench
    # on a fresh machine trains on the same corpus.
    again = str(tmp_path / "again")
    sanity.build_corpus(again, clips_per_class_per_fold=1, words=words)
    for row in rows:
        relative = os.path.join("audio", f"fold{row['fold']}", row["slice_file_name"])
        with open(os.path.join(folder, relative), "rb") as first, open(os.path.join(again, relative), "rb") as second:
            assert first.read() == second.read(), relative


def _row(family, a_last, bwt=None, forgetting=None):
    return {"family": family, "A_last": a_last, "A_avg": a_last, "BWT": bwt, "forgetting": forgetting}


def test_orderings_on_a_handcrafted_results_dict():
    rows = {
        "sup/joint": _row("sup", 0.90),
        "sup/finetune": _row("sup", 0.20, bwt=-0.80),
        "sup/replay16": _row("sup", 0.60),
        "sup/lwf": _row("sup", 0.15),            # below fine-tuning: does not hold
        "sup/gdumb": _row("sup", 0.91),          # within the tolerance above joint: holds
        "replay/joint": _row("replay", 0.40),    # not well above chance
        "replay/finetune": _row("replay", 0.20, bwt=-0.10),   # forgets too little
        "replay/random": _row("replay", 0.30),
        "replay/uncertainty": _row("replay", 0.35),
        "linear/simclr": _row("linear", 0.50, forgetting=0.30),
        "linear/simsiam": _row("linear", 0.20, forgetting=0.10),
        "linear/random": _row("linear", 0.25, forgetting=0.20),
        "linear/sup_finetune": _row("linear", 0.40, forgetting=0.25),
    }
    held = {c["name"]: c["held"] for c in sanity.check_orderings(rows)}
    assert held == {
        "sup: joint well above chance": True,
        "sup: fine-tuning forgets": True,
        "sup/replay16 between fine-tuning and joint": True,
        "sup/lwf between fine-tuning and joint": False,
        "sup/gdumb between fine-tuning and joint": True,
        "replay: joint well above chance": False,
        "replay: fine-tuning forgets": False,
        "replay/random between fine-tuning and joint": True,
        "replay/uncertainty between fine-tuning and joint": True,
        "simclr (linear seen) beats a random encoder": True,
        "simclr (linear seen) forgets less than supervised fine-tuning": False,
        "simsiam (linear seen) beats a random encoder": False,
        "simsiam (linear seen) forgets less than supervised fine-tuning": True,
        "uncertainty memory beats random memory": True,
    }
    del rows["sup/joint"]
    assert {c["name"]: c["held"] for c in sanity.check_orderings(rows)}["sup/replay16 between fine-tuning and joint"] is None


@pytest.mark.parametrize("mode", ["full", "quick"])
def test_every_method_is_accepted_by_its_recipe_start_up_check(mode, tmp_path):
    """The bench's overrides (optimizer, SpecAugment, encoders ...) pass each recipe's config check:
    a renamed key or a refused value fails here, not 20 minutes into the benchmark."""
    import runpy

    import speechbrain as sb

    from soundcl.core.recipe import check_config

    out, corpus = str(tmp_path / "out"), str(tmp_path / "corpus")
    os.makedirs(corpus)
    specs = sanity.method_specs(sanity.SETTINGS[mode])
    assert {"sup/joint", "sup/finetune", "replay/joint", "replay/finetune", "linear/random"} <= set(specs)
    assert {"ncm/random", "ranpac/random", "ncm/simclr", "ranpac/simclr"} <= set(specs)  # frozen_cil (issue 27)
    for name, spec in specs.items():
        os.makedirs(os.path.join(sanity.run_dir(out, name), "run", "1986", "save"), exist_ok=True)
    for name, spec in specs.items():
        argv = sanity.recipe_argv(name, spec, out, corpus)
        script = runpy.run_path(os.path.join(REPO_ROOT, "recipes", f"{spec[0]}.py"), run_name="bench_check")
        needs = script["NEEDS"]
        overrides = sb.parse_arguments(argv)[2]
        try:
            if spec[0] == "frozen_cil":  # the YAML's frozen_head adds its Brain's keys (e.g. RanPAC's ranpac_M)
                needs = script["needs"](check_config(argv[0], overrides, needs))
            check_config(argv[0], overrides, needs)
        except SystemExit as err:
            pytest.fail(f"{mode} {name}: refused: {err}")


def test_frozen_encoder_rows_are_reported_against_the_random_encoder_and_each_other():
    rows = {"ncm/random": _row("frozen", 0.40), "ranpac/random": _row("frozen", 0.50),
            "ncm/simclr": _row("frozen", 0.45), "ranpac/simclr": _row("frozen", 0.44)}
    checks = {c["name"]: (c["held"], c["kind"]) for c in sanity.check_orderings(rows)}
    assert checks == {
        "ncm on the SimCLR encoder beats ncm on a random encoder": (True, "report"),
        "ranpac on the SimCLR encoder beats ranpac on a random encoder": (False, "report"),
        "ranpac beats ncm on the random encoder": (True, "report"),
        "ranpac beats ncm on the simclr encoder": (False, "report"),
    }
    assert "frozen_cil.py on the task-0 checkpoint" in sanity.format_table(
        {name: dict(row, method=name, wall_time_s=1.0) for name, row in rows.items()})
