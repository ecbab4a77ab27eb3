"""Shared pytest fixtures for the soundcl tests."""

import os

import pytest

#: Repository root: the parent of this tests/ folder.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def under_ci():
    """Whether the tests run under CI (``CI=true`` in the environment, as .ci/run and CI services set)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_shared(path, what):
    """``path`` if it exists; else skip the calling test, or fail it under CI.

    Under CI the real metadata in ``../shared/data`` must be there: a missing
    file is a failure, not a silent skip.
    """
    if os.path.exists(path):
        return path
    message = f"{what} not found at {path}"
    if under_ci():
        pytest.fail(f"{message} (CI=true: the real metadata in ../shared/data is required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data_dir():
    """Folder with the real metadata files of the public data sets (no audio).

    It lives beside the repository, at ``<repo root>/../shared/data``; tests that need
    it are skipped where it is absent, and fail under CI (:func:`require_shared`).
    """
    path = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
    return require_shared(path, "shared data folder (real metadata files)")


@pytest.fixture(scope="session")
def synth_data_folder(tmp_path_factory):
    """The embedded synthetic data set, generated once per test session (the demo size: 8 clips per class and fold)."""
    from soundcl.data import synthetic

    folder = tmp_path_factory.mktemp("synth") / "UrbanSound8K"
    return str(synthetic.generate(str(folder), clips_per_class_per_fold=8, seed=1234))


#: Overrides that make a recipe tiny: 3 tasks of 2 classes, a 2-block CNN.
TINY_OVERRIDES = [
    "--task_classes=[[0,1],[2,3],[4,5]]",
    "--encoder_channels=[8,16]",
    "--emb_dim=32",
    "--n_mels=32",
    "--number_of_epochs=3",
    "--lr=0.005",
    "--lr_final=0.001",
    "--batch_size=16",
    "--noprogressbar",
]


def recipe_argv(hparams_rel, output_base, data_folder, *extra):
    """argv for a recipe run on the synthetic data with the tiny overrides.

    ``extra`` options replace tiny ones of the same name (YAML rejects a key
    given twice).
    """
    options = {}
    for option in [
        f"--output_base={output_base}",
        f"--data_folder={data_folder}",
        f"--audio_cache={output_base}/audio_cache",
        *TINY_OVERRIDES,
        # The synthetic recipes would otherwise regenerate the shared fixture data.
        *(["--clips_per_class_per_fold=8"] if "hparams/synth/" in hparams_rel else []),
        *extra,
    ]:
        options[option.split("=", 1)[0]] = option
    return [os.path.join(REPO_ROOT, hparams_rel), *options.values()]


def run_recipe(name, argv, replace=None):
    """Run ``recipes/<name>.py`` in-process on ``argv`` (as the command line would); returns its results.

    ``replace``: names of the script's globals -> stand-ins (e.g. a Brain subclass that records).
    """
    import runpy

    script = os.path.join(REPO_ROOT, "recipes", f"{name}.py")
    namespace = runpy.run_path(script, run_name=f"recipe_{name}")
    namespace["main"].__globals__.update(replace or {})
    return namespace["main"](list(argv))


def run_torchrun(name, argv, nproc=2, timeout=600):
    """Run ``recipes/<name>.py`` on ``argv`` under torchrun (``nproc`` processes on this machine,
    one CPU thread each); returns the finished ``subprocess.CompletedProcess`` (output captured)."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"), OMP_NUM_THREADS="1",
               PYTHONFAULTHANDLER="1", TORCH_SHOW_CPP_STACKTRACES="1")  # a crashing rank prints every thread's stack
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    script = os.path.join(REPO_ROOT, "recipes", f"{name}.py")
    return subprocess.run([*torchrun, script, *argv], env=env, capture_output=True, text=True, timeout=timeout)
