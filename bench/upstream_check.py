"""Would a fresh install made today still work? A scheduled-style check, not a merge gate.

    python bench/upstream_check.py [--out DIR] [--try torchaudio==2.11.1 ...]

In a throw-away venv it does what a new user does, ``pip install -e ".[passt]"`` with no
constraints, so pip resolves the newest uploads that setup.py allows; then it lists every
package whose resolved version differs from docs/known_good_versions.txt (the set the test
suite last passed with: the uploads since), and runs what breaks first when a binary set
does not match: ``python -m soundcl.install_check --passt`` and a tiny demo run
(2 tasks, 1 epoch). ``--try PKG==VER ...`` installs those uploads over the resolved set
(``--no-deps``) before the checks: "what happens to a user if pip picked this upload".
Writes ``<out>/upstream_check.json``; exit status 1 when a check fails, naming the
changed packages. It downloads (the torch wheels: minutes on a first run, the pip cache
after): run it by hand or on a schedule, never in the test suite.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOWN_GOOD = os.path.join(REPO_ROOT, "docs", "known_good_versions.txt")
#: Not in `pip freeze` (the venv's own tools) or the project itself.
NOT_COMPARED = {"soundcl", "pip", "setuptools", "wheel"}
DEMO = [os.path.join(REPO_ROOT, "recipes", "sup_train.py"), os.path.join(REPO_ROOT, "hparams", "synth", "sup_train.yaml"),
        "--task_classes=[[0,1],[2,3]]", "--number_of_epochs=1", "--clips_per_class_per_fold=4", "--noprogressbar"]


def read_pins(path):
    """``name==version`` lines -> {normalised name: version}."""
    pins = {}
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[normalise(name)] = version.strip()
    return pins


def normalise(name):
    return name.strip().lower().replace("_", "-")


def run(cmd, log, env=None, timeout=3600):
    """Run ``cmd``, appending its output to ``log``; returns (returncode, seconds)."""
    start = time.time()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    return done.returncode, round(time.time() - start, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/upstream_check")
    parser.add_argument("--try", dest="tries", nargs="*", default=[], metavar="PKG==VER",
                        help="uploads to install over the resolved set (--no-deps) before the checks")
    parser.add_argument("--venv", default=None, help="venv folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    log = os.path.abspath(os.path.join(args.out, "upstream_check.log"))
    open(log, "w").close()
    with tempfile.TemporaryDirectory(prefix="soundcl-upstream-") as tmp:
        venv = args.venv or os.path.join(tmp, "venv")
        python = os.path.join(venv, "bin", "python")
        steps = {}
        steps["venv"] = run([sys.executable, "-m", "venv", venv], log)
        report_path = os.path.join(tmp, "resolution.json")
        steps["resolve"] = run([python, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                                "--report", report_path, "-e", f"{REPO_ROOT}[passt]"], log)
        resolved = {}
        if os.path.exists(report_path):
            with open(report_path, encoding="utf-8") as fin:
                for item in json.load(fin)["install"]:
                    meta = item["metadata"]
                    if normalise(meta["name"]) not in NOT_COMPARED:
                        resolved[normalise(meta["name"])] = meta["version"]
        steps["install"] = run([python, "-m", "pip", "install", "--quiet", "-e", f"{REPO_ROOT}[passt]"], log)
        if args.tries:
            steps["try"] = run([python, "-m", "pip", "install", "--quiet", "--no-deps", *args.tries], log)
            resolved.update(read_pins_from(args.tries))
        env = dict(os.environ, PYTHONPATH="")
        steps["install_check"] = run([python, "-m", "soundcl.install_check", "--passt", "--allow_unpinned"], log, env)
        demo_dir = os.path.join(tmp, "demo")
        steps["demo"] = run([python, *DEMO, f"--output_base={demo_dir}", f"--data_folder={demo_dir}/data"], log, env)

    known = read_pins(KNOWN_GOOD)
    changed = {name: {"known_good": known.get(name), "resolved": version}
               for name, version in sorted(resolved.items()) if known.get(name) != version}
    failed = [name for name, (code, _) in steps.items() if code != 0]
    summary = {"failed_steps": failed, "changed_since_known_good": changed,
               "steps": {name: {"returncode": code, "seconds": s} for name, (code, s) in steps.items()},
               "tries": args.tries, "log": log, "python": sys.version.split()[0]}
    with open(os.path.join(args.out, "upstream_check.json"), "w", encoding="utf-8") as fout:
        json.dump(summary, fout, indent=1)
    for name, change in changed.items():
        print(f"changed: {name} {change['known_good'] or '(new)'} -> {change['resolved']}")
    if failed:
        suspects = ", ".join(f"{n} {c['resolved']}" for n, c in changed.items()) or "none (a change outside the resolution)"
        print(f"BREAKS a fresh install: step(s) {', '.join(failed)} failed (log: {log}); uploads since the "
              f"known-good set: {suspects}", file=sys.stderr)
        return 1
    print(f"a fresh install works ({len(resolved)} packages resolved, {len(changed)} changed since the known-good set)")
    return 0


def read_pins_from(requirements):
    return {normalise(r.split("==", 1)[0]): r.split("==", 1)[1] for r in requirements if "==" in r}


if __name__ == "__main__":
    sys.exit(main())
