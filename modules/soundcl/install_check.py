"""Does the installed torch family import and run? ``python -m soundcl.install_check [--passt]``

torch, torchaudio and torchvision are compiled against one another: a pair that pip
happily resolves (torchaudio 2.11.1 beside torch 2.11.0) may fail only when the compiled
library is loaded (``OSError: Could not load this library: .../libtorchaudio.so``). So
this check does not compare version strings: it imports each package and runs one
operation that goes through its compiled code, then compares the versions with the pins
of ``setup.py`` (:data:`PINNED`). Exit status 1 names every package that failed, 0 when
all run. ``.ci/run`` calls it before the tests; bench/upstream_check.py calls it in a
throw-away venv on the newest uploads.
"""
import argparse
import importlib.metadata
import sys
import traceback

#: The exact torch family setup.py pins (its TORCH_FAMILY; tests/test_install_check.py checks they agree).
PINNED = {"torch": "2.11.0", "torchaudio": "2.11.0", "torchvision": "0.26.0"}


def _run_torch():
    import torch

    value = (torch.ones(4, 4) @ torch.ones(4, 4)).sum().item()
    assert value == 64.0, value


def _run_torchaudio():
    import torch
    import torchaudio
    from torchaudio import _extension

    # The compiled extension is what a mismatched build fails to load (at import or here).
    if not _extension._IS_TORCHAUDIO_EXT_AVAILABLE:
        raise RuntimeError("torchaudio's compiled extension (libtorchaudio) is not available")
    torch.ops._torchaudio.is_align_available()
    out = torchaudio.functional.resample(torch.zeros(1, 800), 8000, 16000)
    assert out.shape == (1, 1600), out.shape


def _run_speechbrain():
    import torch
    from speechbrain.lobes.features import Fbank

    feats = Fbank(n_mels=40)(torch.zeros(1, 16000))
    assert feats.shape[-1] == 40, feats.shape


def _run_torchvision():
    import torch
    import torchvision

    # nms is a compiled torchvision op: a torchvision built for another torch fails here
    # ("operator torchvision::nms does not exist"), as `import timm` then does.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([1.0, 0.5]), 0.5)
    assert kept.tolist() == [0], kept


def _run_timm():
    import timm  # noqa: F401  (pulls torchvision)


def _run_hear21passt():
    import hear21passt  # noqa: F401


#: package -> the check that runs it, in import order (a later one needs the earlier ones).
CORE_CHECKS = {"torch": _run_torch, "torchaudio": _run_torchaudio, "speechbrain": _run_speechbrain}
#: The ``[passt]`` extra (also part of ``[test]``).
PASST_CHECKS = {"torchvision": _run_torchvision, "timm": _run_timm, "hear21passt": _run_hear21passt}


def installed_version(package):
    """The installed distribution's version, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_checks(passt=False):
    """Run every check; returns ``{package: None (ran) or a one-line reason}``."""
    checks = dict(CORE_CHECKS, **(PASST_CHECKS if passt else {}))
    failures = {}
    for package, check in checks.items():
        try:
            check()
        except BaseException as err:  # an OSError, ImportError, or a C++ op that does not exist
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            failures[package] = last
        else:
            failures[package] = None
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passt", action="store_true", help="also torchvision, timm and hear21passt (the [passt] extra)")
    parser.add_argument("--allow_unpinned", action="store_true",
                        help="a torch family other than setup.py's pins is not an error (another CUDA or torch)")
    args = parser.parse_args(argv)
    results = run_checks(passt=args.passt)
    broken = {package: reason for package, reason in results.items() if reason}
    for package, reason in results.items():
        print(f"{package:12s} {installed_version(package) or 'not installed':14s} {'runs' if not reason else 'FAILS: ' + reason}")
    unpinned = {
        package: (installed_version(package), wanted) for package, wanted in PINNED.items()
        if (package in results) and installed_version(package) not in (None, wanted)
    }
    if broken:
        names = ", ".join(f"{p} {installed_version(p)}" for p in broken)
        print(f"error: the installed set does not run: {names} (with torch {installed_version('torch')}); "
              f"install the pinned family: pip install " + " ".join(f"{p}=={v}" for p, v in PINNED.items()),
              file=sys.stderr)
        return 1
    if unpinned and not args.allow_unpinned:
        shown = ", ".join(f"{p} {have} (pinned {want})" for p, (have, want) in unpinned.items())
        print(f"error: not the pinned torch family: {shown}; pass --allow_unpinned if that is on purpose", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
