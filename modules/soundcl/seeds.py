"""Run one recipe for several seeds, one after the other.

    python -m soundcl.seeds recipes/sup_train.py hparams/synth/sup_train.yaml --seeds=[1,2,3] --replay_num_keep=20

runs ``python recipes/sup_train.py hparams/synth/sup_train.yaml --replay_num_keep=20 --seed=<s>``
for each seed, in a subprocess, into ``<output_base>/<experiment_name>/<s>/``. It is the same as
the shell loop ``for s in 1 2 3; do python recipes/... --seed=$s; done``: each run is resumable
as usual (rerun the same command: finished seeds and tasks are skipped). A failing seed stops
the loop (exit status of that run) unless ``--keep_going``. Then ``python -m soundcl.report``.
"""
import subprocess
import sys

import ruamel.yaml

USAGE = ("usage: python -m soundcl.seeds RECIPE.py HPARAMS.yaml --seeds=[1,2,3] [--keep_going] "
         "[--key=value ...]")


def parse_seeds(text):
    """``[1,2,3]``, ``1,2,3`` or ``1`` -> [1, 2, 3]."""
    value = ruamel.yaml.YAML(typ="safe").load(text if text.strip().startswith("[") else f"[{text}]")
    if not isinstance(value, list) or not value or not all(isinstance(s, int) for s in value):
        raise SystemExit(f"error: --seeds={text}: expected a list of integers, e.g. --seeds=[1,2,3]")
    if len(set(value)) != len(value):
        raise SystemExit(f"error: --seeds={text}: a seed is given twice")
    return value


def split_argv(argv):
    """``(recipe argv without --seeds / --keep_going, seeds, keep_going)``."""
    seeds, keep_going, rest = None, False, []
    for arg in argv:
        if arg.startswith("--seeds="):
            seeds = parse_seeds(arg.split("=", 1)[1])
        elif arg == "--keep_going":
            keep_going = True
        elif arg.startswith("--seed=") or arg == "--seed":
            raise SystemExit("error: give the seeds with --seeds=[...], not --seed")
        else:
            rest.append(arg)
    if seeds is None or len(rest) < 2 or not rest[0].endswith(".py"):
        raise SystemExit(USAGE)
    return rest, seeds, keep_going


def commands(argv):
    """The command of each seed."""
    rest, seeds, _ = split_argv(argv)
    return [[sys.executable, *rest, f"--seed={seed}"] for seed in seeds]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE)
        return 0
    _, seeds, keep_going = split_argv(argv)
    failed = []
    for seed, command in zip(seeds, commands(argv)):
        print(f"=== seed {seed}: {' '.join(command[1:])}", flush=True)
        code = subprocess.call(command)
        if code != 0:
            failed.append(seed)
            print(f"=== seed {seed} failed (exit status {code})", flush=True)
            if not keep_going:
                return code
    print(f"=== seeds done: {len(seeds) - len(failed)} of {len(seeds)} ok"
          + (f", failed: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
