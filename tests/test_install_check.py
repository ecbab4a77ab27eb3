"""soundcl.install_check: the installed torch family runs, and a mismatched one is named."""
import os
import subprocess
import sys

from conftest import REPO_ROOT


def _install_check(*args, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*extra_path, os.path.join(REPO_ROOT, "modules")]))
    return subprocess.run([sys.executable, "-m", "soundcl.install_check", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_installed_family_runs_and_is_the_pinned_one():
    done = _install_check("--passt")
    assert done.returncode == 0, done.stdout + done.stderr
    for package in ("torch", "torchaudio", "speechbrain", "torchvision", "timm", "hear21passt"):
        assert f"{package}" in done.stdout and "FAILS" not in done.stdout


def _fake_distribution(root, name, version, init_source):
    """A package ``name`` (its ``__init__`` is ``init_source``) with its dist-info at ``version``."""
    os.makedirs(root / name)
    (root / name / "__init__.py").write_text(init_source)
    info = root / f"{name}-{version}.dist-info"
    os.makedirs(info)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_a_torchaudio_built_for_another_torch_fails_naming_it(tmp_path):
    # What torchaudio 2.11.1 does beside torch 2.11.0 (measured: bench/upstream_check.py --mismatch).
    _fake_distribution(tmp_path, "torchaudio", "2.11.1",
                       "raise OSError('Could not load this library: torchaudio/lib/libtorchaudio.so')\n")
    done = _install_check(extra_path=[str(tmp_path)])
    assert done.returncode == 1
    assert "torchaudio 2.11.1" in done.stderr and "speechbrain" in done.stderr
    assert "torchaudio   2.11.1         FAILS: OSError: Could not load this library" in done.stdout


def test_an_unpinned_family_that_runs_is_refused_unless_allowed(tmp_path):
    # The real, working torchvision, registered as another version by a dist-info earlier on the path.
    info = tmp_path / "torchvision-0.99.0.dist-info"
    os.makedirs(info)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0\n")
    done = _install_check("--passt", extra_path=[str(tmp_path)])
    assert done.returncode == 1 and "torchvision 0.99.0 (pinned 0.26.0)" in done.stderr, done.stdout + done.stderr
    assert _install_check("--passt", "--allow_unpinned", extra_path=[str(tmp_path)]).returncode == 0


def test_setup_py_pins_the_family_that_install_check_checks():
    import re

    from soundcl.install_check import PINNED

    setup_py = open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8").read()
    pins = dict(re.findall(r'"(torch|torchaudio|torchvision)==([0-9.]+)"', setup_py))
    assert pins == PINNED
