"""Fast version of bench/soak.py: three random SIGKILLs, identical results."""
import importlib.util
import os

from conftest import REPO_ROOT


def test_three_random_kills_recover_identical_results(tmp_path):
    spec = importlib.util.spec_from_file_location("soak", os.path.join(REPO_ROOT, "bench", "soak.py"))
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    summary = soak.soak(n_kills=3, seed=7, work=str(tmp_path))
    assert summary["kills"] == 3
    assert summary["identical_matrix"], summary
    assert summary["identical_memory"], summary
