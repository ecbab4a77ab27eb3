"""Tests on the real metadata in ../shared/data: skipped where it is absent, a failure under CI (CI=true)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, require_shared, under_ci

NEEDS_SHARED = '''
def test_needs_the_shared_folder(shared_data_dir):
    assert shared_data_dir
'''


@pytest.fixture(scope="module")
def repo_without_shared_data(tmp_path_factory):
    """A copy of tests/conftest.py in a repository whose ../shared/data does not exist, with one test needing it."""
    tests = tmp_path_factory.mktemp("elsewhere") / "repo" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(os.path.join(REPO_ROOT, "tests", "conftest.py"), tests / "conftest.py")
    (tests / "test_needs_shared.py").write_text(NEEDS_SHARED)
    assert not (tests.parent.parent / "shared").exists()
    return tests


@pytest.mark.parametrize("ci, outcome", [("", "1 skipped"), ("true", "1 error")])
def test_missing_shared_folder_skips_locally_and_fails_under_ci(repo_without_shared_data, ci, outcome):
    env = dict(os.environ, CI=ci, PYTHONPATH=os.path.join(REPO_ROOT, "modules"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(repo_without_shared_data)],
        cwd=str(repo_without_shared_data), env=env, capture_output=True, text=True,
    )
    assert outcome in run.stdout, run.stdout[-2000:]
    assert (run.returncode != 0) == bool(ci), run.stdout[-2000:]
    if ci:
        assert "CI=true: the real metadata in ../shared/data is required" in run.stdout


def test_require_shared(tmp_path, monkeypatch):
    assert require_shared(str(tmp_path), "here") == str(tmp_path)
    monkeypatch.setenv("CI", "true")
    assert under_ci()
    with pytest.raises(pytest.fail.Exception, match="absent.csv not found"):
        require_shared(str(tmp_path / "absent.csv"), "absent.csv")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="absent.csv not found"):
        require_shared(str(tmp_path / "absent.csv"), "absent.csv")
