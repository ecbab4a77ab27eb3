#!/usr/bin/env python3
"""Every class-incremental strategy of ``soundcl.methods.supervised.strategies.STRATEGIES`` (not the
``DOMAIN_ONLY`` ones) on the synthetic 5-task set, several seeds, one report.

For each strategy and seed, runs ``recipes/sup_train.py hparams/synth/sup_train.yaml
--strategy=NAME --experiment_name=NAME --seed=S`` (in-process, one after the other) into
``<output_base>/NAME/S/``, with ``--memory_size`` (default 48) for the strategies whose
parts read ``memory_size`` (a fixed-size memory: er_ace, derpp, gdumb, icarl). Then writes
the comparison (``python -m soundcl.report`` on the strategies' folders) into
``<output_base>/report/`` (report.md, report.csv, PNGs). Rerunning resumes: finished
runs and tasks are skipped. icarl's matrix is its nearest-mean-of-exemplars accuracy.

    PYTHONPATH=modules python bench/strategies.py --output_base=results/bench_strategies
    ... --seeds=1 --strategies=lwf,icarl --number_of_epochs=1 --task_classes="[[0,1],[2,3]]"   # tiny
    ... --extra="--cpu_threads=2"                                                            # any recipe override
"""
import argparse
import os
import shlex
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "modules"))

from soundcl.methods.supervised.strategies import DOMAIN_ONLY, STRATEGIES  # noqa: E402

HPARAMS = os.path.join(REPO_ROOT, "hparams", "synth", "sup_train.yaml")


def run_recipe(argv):
    """Run ``recipes/sup_train.py`` in-process on ``argv``; returns its results."""
    import runpy

    script = os.path.join(REPO_ROOT, "recipes", "sup_train.py")
    return runpy.run_path(script, run_name="bench_sup_train")["main"](list(argv))


def has_fixed_size_memory(name):
    """Whether a part of strategy ``name`` reads ``memory_size``."""
    return any("memory_size" in getattr(part, "HPARAMS", {}) for part in STRATEGIES[name].parts)


def run_argv(name, seed, args):
    argv = [HPARAMS, f"--output_base={args.output_base}", f"--strategy={name}", f"--experiment_name={name}",
            f"--seed={seed}", "--noprogressbar"]
    if has_fixed_size_memory(name):
        argv.append(f"--memory_size={args.memory_size}")
    if args.number_of_epochs is not None:
        argv.append(f"--number_of_epochs={args.number_of_epochs}")
    if args.task_classes is not None:
        argv.append(f"--task_classes={args.task_classes}")
    return argv + shlex.split(args.extra)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_base", default="results/bench_strategies")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--strategies", default=",".join(n for n in STRATEGIES if n not in DOMAIN_ONLY),
                        help="comma-separated names (default: all but the domain-incremental-only ones)")
    parser.add_argument("--memory_size", type=int, default=48, help="for the strategies with a fixed-size memory")
    parser.add_argument("--number_of_epochs", type=int, default=None, help="default: the YAML's (6)")
    parser.add_argument("--task_classes", default=None, help='e.g. "[[0,1],[2,3]]"; default: the YAML\'s 5 tasks')
    parser.add_argument("--extra", default="", help="more recipe overrides, given to every run")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}: expected some of {', '.join(STRATEGIES)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from soundcl.results import report

    timings = {}
    for name in args.strategies:
        for seed in args.seeds:
            start = time.time()
            results = run_recipe(run_argv(name, seed, args))
            timings[(name, seed)] = time.time() - start
            print(f"[bench] {name} seed {seed}: A_last {100 * results['A_last']:.1f} % "
                  f"({timings[(name, seed)]:.0f} s)", flush=True)
    out = os.path.join(args.output_base, "report")
    report.main([os.path.join(args.output_base, name) for name in args.strategies] + ["--out", out])
    print(f"[bench] report: {os.path.join(out, 'report.md')}")
    return out


if __name__ == "__main__":
    main()
