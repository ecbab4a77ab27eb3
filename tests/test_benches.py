"""The benches of bench/ with their smallest flags, and the logic of the soak's kill planning."""
import importlib.util
import json
import os
import random

import pytest

from conftest import REPO_ROOT


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(REPO_ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ memory_update
def test_memory_update_bench_times_selection_only_and_reports_the_ratios(tmp_path, monkeypatch):
    bench = _load("memory_update")
    built = []
    original = bench.build_audio
    monkeypatch.setattr(bench, "build_audio", lambda *a, **k: built.append(1) or original(*a, **k))
    out = tmp_path / "mu.json"
    summary = bench.main(["--n_candidates=8", "--duration=0.25", "--c=1", "--repeats=1", "--metric_k=2",
                          "--policies=uncertainty_noisytune,uncertainty_shift,uncertainty_noise,prototype",
                          "--scaling=4,8", "--device=cpu", f"--out={out}"])
    assert built == [1]  # the candidate audio is made once, before any timing
    assert set(summary["seconds"]) == {"plain_forward", "prototype", "uncertainty_noisytune", "uncertainty_shift",
                                       "uncertainty_noise"}
    assert set(summary["ratios"]) == {"noisytune/plain_forward", "noisytune/shift", "noisytune/noise"}
    assert all(len(times) == 1 for times in summary["all_seconds"].values())
    assert json.loads(out.read_text())["ratios"] == summary["ratios"]
    per_clip = summary["prototype_per_clip_vs_batched"]
    assert per_clip["candidates"] == 8 and per_clip["ratio"] == pytest.approx(per_clip["per_clip_s"] / per_clip["batched_s"])
    growth = summary["growth"]
    assert growth["candidates"] == [4, 8] and len(growth["uncertainty_noisytune"]) == 2
    assert growth["uncertainty_noisytune_slope_s_per_candidate"] == pytest.approx(
        (growth["uncertainty_noisytune"][1] - growth["uncertainty_noisytune"][0]) / 4)  # two points: the line through them


def test_memory_update_bench_refuses_a_memory_that_holds_every_candidate():
    bench = _load("memory_update")
    with pytest.raises(SystemExit):
        bench.parse_args(["--n_candidates=8", "--memory_size=8"])
    assert bench.parse_args(["--n_candidates=8"]).memory_size == 4


# ------------------------------------------------------------------ soak (no process)
def test_soak_watcher_names_checkpoints_by_order_not_time(tmp_path):
    soak = _load("soak")
    watcher = soak.TreeWatcher(str(tmp_path))
    task = tmp_path / "run" / "save" / "task0"
    (task / "CKPT+2026-01-01+10-00-00+00").mkdir(parents=True)
    (task / "CKPT+2026-01-01+10-00-00+00" / "brain.ckpt").write_text("x")
    first = watcher.poll()
    assert "run/save/task0/CKPT#0/brain.ckpt" in first and "run/save/task0/CKPT#0" in first
    (task / "CKPT+2026-01-01+10-00-00+00" / "brain.ckpt").unlink()  # an old checkpoint removed ...
    (task / "CKPT+2026-01-01+10-00-00+00").rmdir()
    (task / "CKPT+2026-01-01+11-30-00+00").mkdir()  # ... the next one, at another time
    (task / "CKPT+final").mkdir()
    assert sorted(watcher.poll()) == ["run/save/task0/CKPT#1", "run/save/task0/CKPT+final"]
    assert watcher.poll() == []


def test_soak_kill_targets_stay_within_the_remaining_work():
    soak = _load("soak")
    # Start-up until 3 s, files until 17 s, the run ends at 17.5 s.
    times = {"run": 3.0, "run/log.txt": 3.1, "data/a.wav": 4.0, "run/ckpt": 10.0, "run/results.json": 16.0,
             "run/plot.png": 17.0}
    timeline = soak.Timeline(times, total_s=17.5)
    assert timeline.startup_s == 3.0
    assert timeline.horizon_s == 16.0  # plot.png came less than 0.9 s (5 %) before the end
    rng = random.Random(0)
    kinds, slices = [], set()
    for progress in (0.0, 3.0, 9.0, 15.9):
        for n_kills in (1, 5, 20):
            for kill_index in range(n_kills):
                for _ in range(10):
                    kind, target, when = soak.plan_kill(rng, timeline, progress, kill_index, n_kills)
                    kinds.append(kind)
                    if kind == "startup":
                        assert target is None and 0 < when < timeline.startup_s
                        continue
                    base = max(progress, timeline.startup_s)
                    assert base <= target <= timeline.horizon_s  # within the work that remains
                    assert when == pytest.approx(timeline.startup_s + target - base)
                    # A file at or after the target is still to come: the kill cannot come too late.
                    assert any(t >= target for t in times.values() if t <= timeline.horizon_s)
                    if progress == 0.0 and n_kills == 5:
                        slices.add(int((target - 3.0) // ((16.0 - 3.0) / 5)))
    assert slices == {0, 1, 2, 3, 4}  # from the start, kill i aims at the i-th fifth of the work
    assert 0.05 < kinds.count("startup") / len(kinds) < 0.3
    # No work left before the horizon: start-up kills only.
    assert {soak.plan_kill(rng, timeline, 16.0, 0, 3)[0] for _ in range(20)} == {"startup"}
    assert timeline.progress(["run/ckpt", "unknown"], 4.0) == 10.0


# ------------------------------------------------------------------ linear_eval
def test_linear_eval_bench_smallest_run_reports_both_ratios(tmp_path, capsys):
    bench = _load("linear_eval")
    summary = bench.main_bench([
        "--output_base", str(tmp_path), "--number_of_epochs=30", "--measure_epochs=1", "--encoder=synth",
        "--extra=--task_classes=[[0,1],[2,3]] --encoder_channels=[8,16] --emb_dim=32 --n_mels=32 "
        "--clips_per_class_per_fold=2 --batch_size=16",
        "--encoder_extra=--number_of_epochs=1",
    ])
    out = capsys.readouterr().out
    assert summary["identical"], out
    assert summary["measured"]["ratio"] > 0 and summary["extrapolated"]["epochs"] == 30
    # Timed: the linear evaluation of each task (embedding pass, epochs, tests), not the recipe start-up.
    per_task = summary["measured"]["per_task"]["True"]
    assert summary["measured"]["cached_s"] == pytest.approx(
        sum(t["prepare_time_s"] + t["train_time_s"] + t["test_time_s"] for t in per_task))
    assert summary["measured"]["cached_s"] < summary["measured"]["wall_cached_s"]
    assert "extrapolated" in out


def test_soak_fails_saying_how_many_kills_it_made(monkeypatch, capsys):
    soak = _load("soak")
    monkeypatch.setattr(soak, "soak", lambda n_kills, seed, work=None: {
        "kills_requested": n_kills, "kills": 2, "attempts": 3, "recovered": True, "identical_matrix": True,
        "identical_memory": True, "kill_log": [], "ok": False})
    monkeypatch.setattr("sys.argv", ["soak.py", "--kills", "3"])
    with pytest.raises(SystemExit) as exit_info:
        soak.main()
    assert exit_info.value.code == 1
    assert "only 2 of the 3 requested kills were made" in capsys.readouterr().err


# ------------------------------------------------------------------ strategies
def test_strategies_bench_runs_every_strategy_and_writes_the_report(tmp_path, synth_data_folder):
    from soundcl.methods.supervised.strategies import DOMAIN_ONLY, STRATEGIES

    bench = _load("strategies")
    assert [bench.has_fixed_size_memory(name) for name in ("finetune_or_replay", "lwf", "er_ace", "gdumb", "icarl")] \
        == [False, False, True, True, True]
    extra = (f"--data_folder={synth_data_folder} --audio_cache={tmp_path}/audio_cache --clips_per_class_per_fold=8 "
             "--encoder_channels=[8,16] --emb_dim=32 --n_mels=32")
    out = bench.main([f"--output_base={tmp_path}", "--seeds=1", "--number_of_epochs=1",
                      "--task_classes=[[0,1],[2,3]]", "--memory_size=8", f"--extra={extra}"])
    table = (tmp_path / "report" / "report.md").read_text()
    for name in (n for n in STRATEGIES if n not in DOMAIN_ONLY):  # those need task_domains
        assert f"| {name} |" in table, name
        assert (tmp_path / name / "1" / "results.json").exists()
    assert json.loads((tmp_path / "icarl" / "1" / "run_config.json").read_text())["memory_size"] == "8"
    assert out == str(tmp_path / "report")


# ------------------------------------------------------------------ throughput
def test_throughput_bench_writes_the_loader_to_step_ratio(tmp_path):
    bench = _load("throughput")
    out = tmp_path / "throughput.json"
    summary = bench.main(["--clip_seconds=0.5", "--encoders=small_cnn", "--default_encoder=small_cnn",
                          "--num_workers=0,1", "--ratio_workers=0", "--epoch_workers=1", "--fill_workers=1",
                          "--step_batches=1", "--epoch_batches=1", "--epoch_repeats=1", "--batch_size=4",
                          f"--work_dir={tmp_path / 'work'}", f"--out={out}"])
    written = json.loads(out.read_text())
    assert written["loader_to_step_ratio"] == pytest.approx(
        written["loader"]["cached"]["0"]["steady_clips_per_s"] / written["training_step"]["small_cnn"]["clips_per_s"])
    assert written["loader_to_step_ratio"] > 0
    assert set(written["loader"]) == {"cached", "uncached"} and set(written["loader"]["uncached"]) == {"0", "1"}
    assert written["cache_fill"]["sequential"]["seconds_per_1000_clips"] > 0
    assert written["epoch"]["step_time_with_loader_over_preloaded"] > 0
    assert written["clips"] == summary["clips"] == 100  # one clip per (class, fold) of the US8K layout
