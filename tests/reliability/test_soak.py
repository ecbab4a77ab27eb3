"""Fast version of bench/soak.py: three SIGKILLs at random moments of the remaining work, identical results.

Kills are triggered by the run's own progress (files it writes) as well as by
time, so the count is exact however loaded the machine is.
"""
import importlib.util
import os

from conftest import REPO_ROOT


def test_three_random_kills_recover_identical_results(tmp_path):
    spec = importlib.util.spec_from_file_location("soak", os.path.join(REPO_ROOT, "bench", "soak.py"))
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    summary = soak.soak(n_kills=3, seed=7, work=str(tmp_path))
    assert summary["kills"] == 3, summary
    assert summary["attempts"] == 4 and len(summary["kill_log"]) == 3, summary
    assert summary["identical_matrix"], summary
    assert summary["identical_memory"], summary
    assert summary["ok"], summary
