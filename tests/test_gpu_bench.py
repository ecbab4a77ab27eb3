"""bench/gpu.py in its CPU mode (--device=cpu --tiny): every figure produced, every recipe family run and checked.

The GPU run itself (--device=cuda:0) needs a GPU; this keeps the script working until one is at hand.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "bench", "gpu.py")


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_cpu_tiny_produces_every_figure_and_checks_every_recipe_family(tmp_path):
    gpu = _load()
    out = tmp_path / "gpu"
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, SCRIPT, "--device=cpu", "--tiny", f"--out={out}"], env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["failures"] == []
    for key in ("torch", "torch_cuda_build", "device", "device_name", "cpus", "commit"):
        assert key in report["machine"], key
    # Every figure: a finite value, or (GPU memory on a CPU only) an explicit reason.
    assert set(report["figures"]) == set(gpu.FIGURES)
    for key, fig in report["figures"].items():
        if key.startswith("memory."):
            assert fig["value"] is None and fig["not_applicable"] and "CUDA" in fig["note"], key
        else:
            assert isinstance(fig["value"], float) and math.isfinite(fig["value"]), (key, fig)
    assert "EXTRAPOLATED" in report["figures"]["cnn14.us8k_epoch_s_extrapolated"]["note"]
    assert report["figures"]["cnn14.us8k_epoch_s_extrapolated"]["value"] == pytest.approx(
        gpu.US8K_EPOCH_CLIPS / report["figures"]["cnn14.loader_fed_bf16_clips_per_s"]["value"])
    # Every recipe family, on the CPU reference and the device run, 2 tasks, finite results, compared.
    runs = report["recipes"]["runs"]
    assert set(runs) == {"sup_train_derpp", "replay_train_noisytune", "simclr_train", "linclf_train", "dsmn_train",
                         "sit_train_passt"}
    for family, by_cfg in runs.items():
        assert set(by_cfg) == {"cpu/fp32", "cpu/bf16"}, family
        for key, run in by_cfg.items():
            assert run["returncode"] == 0 and run["finite"] and run["finished_tasks"] == 2, (family, key)
            assert "--precision=" + key.split("/")[1] in run["command"]
        check = report["recipes"]["checks"][f"{family} cpu/bf16"]
        assert check["ok"] and math.isfinite(check["first_train_loss_rel_diff"]), (family, check)
    table = (out / "gpu.md").read_text()
    assert "| cnn14.us8k_epoch_s_extrapolated |" in table and "| sit_train_passt | cpu/bf16 |" in table
    print(f"bench/gpu.py --device=cpu --tiny: {wall:.1f} s (script's own wall {report['wall_s']:.1f} s)")


def test_gpu_bench_budget_leaves_figures_missing_and_fails(tmp_path):
    gpu = _load()
    report = gpu.main(["--device=cpu", "--tiny", "--only=passt,noisytune", "--budget_s=0", f"--out={tmp_path}"])
    assert set(report["figures"]) == {"passt.train_step_bf16_clips_per_s", "noisytune.over_plain_forward",
                                      "memory.passt_bf16_peak_mib", "memory.noisytune_peak_mib"}
    assert all(fig["missing"] and "budget" in fig["note"] for fig in report["figures"].values())
    assert report["failures"] and json.loads((tmp_path / "gpu.json").read_text())["failures"] == report["failures"]


def test_gpu_bench_goals_and_comparison():
    gpu = _load()
    assert gpu.goal_met(1.1, "<= 1.2") and not gpu.goal_met(1.3, "<= 1.2") and gpu.goal_met(44, ">= 10")
    assert gpu.goal_met(3.0, "~5") is None and gpu.goal_met(None, "<= 1.2") is None
    ref = {"finite": True, "A_last": 0.5, "first_train_loss": 1.0, "accuracy_matrix": [[0.5, None], [0.25, 0.75]]}
    close = dict(ref, A_last=0.6, first_train_loss=1.1, accuracy_matrix=[[0.5, None], [0.5, 0.75]])
    result = gpu.compare(close, ref, acc_atol=0.3, loss_rtol=0.25)
    assert result["comparable"] and result["accuracy_max_abs_diff"] == pytest.approx(0.25)
    assert not gpu.compare(dict(close, first_train_loss=2.0), ref, 0.3, 0.25)["comparable"]
    assert not gpu.compare(dict(close, finite=False), ref, 0.3, 0.25)["comparable"]
