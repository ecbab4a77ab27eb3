#!/usr/bin/env python3
"""Wall time of one memory update per policy and uncertainty metric.

    PYTHONPATH=modules python bench/memory_update.py --threads=1 --out=memory_update.json
    PYTHONPATH=modules python bench/memory_update.py --n_candidates=500 --duration=5 --sample_rate=44100 --c=3 --device=cuda

The candidate audio (random clips, all classes seen, enough for the largest
count measured) is built once, before any timing, and kept decoded in memory: a
policy's data set is a view on it, so neither data generation nor decoding nor
disk speed is timed. With a BC-ResNet-``c`` on the torchlibrosa front end it
then times, for each policy, ``select`` alone (class-balanced, ``memory_size`` <
candidates so that every policy has to choose), and one plain forward pass over
the candidates (``plain_predictions``) as the unit of cost. Each measurement is
warmed up once, repeated ``--repeats`` times round-robin over the policies (so a
change of load on the machine hits every policy alike) and the median is
reported, with the ratios noisytune / plain forward (goal <= 1.3: one encoder
pass plus k cheap head passes), noisytune / shift and noisytune / noise.

Then, through the same public API (``FixedSizeMemory.from_hparams``):

* prototype (herding) with the loader's batches (``--batch_size``) against the
  same policy fed one clip per pass (``per_clip_candidates`` candidates; goal 10x);
* growth: noisytune and a plain forward pass over ``--scaling`` candidate counts
  (default 250, 500, 1000, 2000), with the least-squares slope in seconds per
  candidate, its R^2 and the time per candidate at the largest count over that at
  the smallest (1 = linear).

Everything is written to ``--out`` (JSON). On a CPU shared with other jobs,
``--threads=1`` keeps the timings steady: with more threads than free cores, a
preempted thread stalls the others and single calls vary several-fold.
Measured numbers: bench/README.md.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import speechbrain as sb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules"))

from soundcl.memory.policies import FixedSizeMemory  # noqa: E402
from soundcl.core.task_loop import MemoryContext  # noqa: E402
from soundcl.memory.scores import plain_predictions  # noqa: E402
from soundcl.models.bcresnet import BCResNet  # noqa: E402
from soundcl.models.encoders import Classifier  # noqa: E402
from soundcl.models.frontend import LogMelFrontEnd, MelBatchNorm  # noqa: E402

#: (result name, mem_manage, uncert_metric) of every timed memory update.
POLICIES = [("random", "random", None), ("reservoir", "reservoir", None), ("prototype", "prototype", None),
            ("prototype_herding", "prototype_herding", None)] + [
    (f"uncertainty_{m}", "uncertainty", m)
    for m in ("noisytune", "noisytune_embedding", "shift", "speed_roll", "noise", "mask", "combination")
]
#: Ratios reported: (name, numerator, denominator).
RATIOS = [
    ("noisytune/plain_forward", "uncertainty_noisytune", "plain_forward"),
    ("noisytune/shift", "uncertainty_noisytune", "uncertainty_shift"),
    ("noisytune/noise", "uncertainty_noisytune", "uncertainty_noise"),
]


class BenchBrain:
    """The model parts a memory policy uses (same calls as ContinualFeatureBrain)."""

    def __init__(self, modules, device):
        self.modules = modules.to(device)
        self.device = torch.device(device)

    def compute_feats(self, wavs, lens, stage):
        return self.modules.mean_var_norm(self.modules.compute_features(wavs), lens)


def build_audio(rows, n_samples, seed=0):
    """Decoded candidate audio, built once: ``id -> float32 tensor [n_samples]``."""
    generator = torch.Generator().manual_seed(seed)
    return {row["ID"]: torch.randn(n_samples, generator=generator) * 0.1 for row in rows}


def make_dataset_factory(audio):
    """``make_dataset(rows, train)`` over the prebuilt audio (no generation, no decoding)."""

    def make_dataset(rows, train):
        data = {row["ID"]: {"sig": audio[row["ID"]], "class_idx": row["class_idx"]} for row in rows}
        dataset = sb.dataio.dataset.DynamicItemDataset(data)
        sb.dataio.dataset.set_output_keys([dataset], ["id", "sig", "class_idx"])
        return dataset

    return make_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_candidates", type=int, default=250)
    parser.add_argument("--n_classes", type=int, default=10)
    parser.add_argument("--memory_size", type=int, default=None,
                        help="memory slots (default: half the candidates); must be below n_candidates")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per clip")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--c", type=float, default=1, help="BC-ResNet width factor")
    parser.add_argument("--metric_k", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--policies", default=",".join(name for name, _, _ in POLICIES),
                        help="comma-separated subset of: " + ", ".join(name for name, _, _ in POLICIES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: torch's own choice); 1 steadies timings on a busy machine")
    parser.add_argument("--per_clip_candidates", type=int, default=None,
                        help="candidates of the prototype per-clip vs batched comparison (default: n_candidates)")
    parser.add_argument("--scaling", default="250,500,1000,2000",
                        help="candidate counts of the growth measurement (noisytune and plain forward; '' = off)")
    parser.add_argument("--scaling_repeats", type=int, default=1, help="timed repeats per count (median)")
    parser.add_argument("--out", default="memory_update_bench.json")
    args = parser.parse_args(argv)
    if args.memory_size is None:
        args.memory_size = args.n_candidates // 2
    if not 0 < args.memory_size < args.n_candidates:
        parser.error(f"need 0 < memory_size < n_candidates (else no policy selects anything), "
                     f"got memory_size={args.memory_size}, n_candidates={args.n_candidates}")
    args.per_clip_candidates = args.per_clip_candidates or args.n_candidates
    args.scaling = [int(n) for n in args.scaling.split(",") if n]
    if any(n < 2 for n in args.scaling):
        parser.error("--scaling counts must be >= 2")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    unknown = set(args.policies.split(",")) - {name for name, _, _ in POLICIES}
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_samples = int(args.duration * args.sample_rate)
    modules = torch.nn.ModuleDict({
        "compute_features": LogMelFrontEnd(args.sample_rate),
        "mean_var_norm": MelBatchNorm(64),
        "embedding_model": BCResNet(64, c=args.c),
        "classifier": Classifier(int(round(32 * args.c)), args.n_classes),
    })
    brain = BenchBrain(modules, args.device)
    n_all = max([args.n_candidates, args.per_clip_candidates, *args.scaling])
    all_rows = [{"ID": f"clip{i:05d}", "class_idx": i % args.n_classes} for i in range(n_all)]
    rows_by_id = {r["ID"]: r for r in all_rows}
    rows = all_rows[: args.n_candidates]
    ids = [r["ID"] for r in rows]

    # Built once, for the largest candidate count, outside every timed region.
    start = time.perf_counter()
    make_dataset = make_dataset_factory(build_audio(all_rows, n_samples))
    build_s = time.perf_counter() - start

    def context(seed, batch_size=args.batch_size):
        return MemoryContext(1, brain, rows_by_id, list(range(args.n_classes)), make_dataset,
                             {"batch_size": batch_size}, np.random.RandomState(seed))

    def sync():
        if brain.device.type == "cuda":
            torch.cuda.synchronize()

    def prepare_plain(seed):
        ctx = context(seed)
        return lambda: plain_predictions(ids, ctx)

    def prepare_policy(mem_manage, metric, candidates=rows, batch_size=args.batch_size):
        def prepare(seed):
            # Policy and context are made outside the timed call; only select() is timed.
            policy = FixedSizeMemory.from_hparams({
                "mode": "replay", "mem_manage": mem_manage, "memory_size": max(1, len(candidates) // 2)
                if candidates is not rows else args.memory_size,
                "uncert_metric": metric or "noisytune", "metric_k": args.metric_k, "noise_lambda": 0.2,
                "uncertainty_from_task": 0, "sample_rate": args.sample_rate,
            })
            ctx = context(seed, batch_size)
            return lambda: policy.select([], candidates, ctx)
        return prepare

    wanted = set(args.policies.split(","))
    measures = {"plain_forward": prepare_plain}
    measures.update({name: prepare_policy(mm, metric) for name, mm, metric in POLICIES if name in wanted})

    def run_once(prepare, seed):
        call = prepare(seed)
        sync()
        start = time.perf_counter()
        call()
        sync()
        return time.perf_counter() - start

    for prepare in measures.values():
        run_once(prepare, 0)  # warm-up (allocator, cuDNN autotuning, first-call costs)
    times = {name: [] for name in measures}
    for r in range(args.repeats):
        for name, prepare in measures.items():
            times[name].append(run_once(prepare, r + 1))
    results = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {name: results[a] / results[b] for name, a, b in RATIOS if a in results and b in results}
    # Spread of the ratio over the repeats (numerator and denominator timed moments apart).
    ratio_ranges = {name: [min(x / y for x, y in zip(times[a], times[b])), max(x / y for x, y in zip(times[a], times[b]))]
                    for name, a, b in RATIOS if a in results and b in results}

    device_name = (torch.cuda.get_device_name(0) if brain.device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)")
    print(f"memory update, {args.n_candidates} candidates of {args.duration:g} s at {args.sample_rate} Hz, "
          f"BC-ResNet-{args.c:g}, k={args.metric_k}, memory {args.memory_size}, {device_name}, "
          f"median of {args.repeats} (candidate audio built once in {build_s:.2f} s, not timed)")
    print(f"{'timed call':<26}{'seconds':>10}{'x plain':>10}")
    for name, seconds in results.items():
        print(f"{name:<26}{seconds:>10.3f}{seconds / results['plain_forward']:>10.2f}")
    print(f"{'ratio of medians':<26}{'value':>10}   per repeat")
    for name, value in ratios.items():
        low, high = ratio_ranges[name]
        print(f"{name:<26}{value:>10.3f}   {low:.3f}-{high:.3f}")
    summary = {"args": vars(args), "device": device_name, "audio_build_s": build_s, "seconds": results,
               "all_seconds": times, "ratios": ratios, "ratio_ranges": ratio_ranges}

    # Prototype (herding): the policy's batched encoder pass vs the same policy fed one clip per batch.
    if "prototype" in wanted:
        proto_rows = all_rows[: args.per_clip_candidates]
        batched = prepare_policy("prototype_herding", None, proto_rows, args.batch_size)
        per_clip = prepare_policy("prototype_herding", None, proto_rows, 1)
        run_once(per_clip, 0)
        pairs = [(run_once(batched, r + 1), run_once(per_clip, r + 1)) for r in range(args.repeats)]
        b_s, p_s = float(np.median([b for b, _ in pairs])), float(np.median([p for _, p in pairs]))
        summary["prototype_per_clip_vs_batched"] = {
            "candidates": len(proto_rows), "batch_size": args.batch_size, "batched_s": b_s, "per_clip_s": p_s,
            "ratio": p_s / b_s, "per_repeat_ratio": [p / b for b, p in pairs]}
        print(f"prototype (herding), {len(proto_rows)} candidates: batched ({args.batch_size} clips per pass) "
              f"{b_s:.3f} s, one clip per pass {p_s:.3f} s: {p_s / b_s:.1f}x (goal >= 10)")

    # Growth with the candidate count: noisytune and one plain forward pass, slope by least squares.
    if args.scaling:
        growth = {"candidates": args.scaling, "uncertainty_noisytune": [], "plain_forward": []}
        for n in args.scaling:
            subset = all_rows[:n]
            subset_ids = [r["ID"] for r in subset]
            measures_n = {"uncertainty_noisytune": prepare_policy("uncertainty", "noisytune", subset),
                          "plain_forward": lambda seed, ids_=subset_ids: (lambda ctx: lambda: plain_predictions(
                              ids_, ctx))(context(seed))}
            for name, prepare in measures_n.items():
                growth[name].append(float(np.median([run_once(prepare, r + 1) for r in range(args.scaling_repeats)])))
        for name in ("uncertainty_noisytune", "plain_forward"):
            x, y = np.asarray(args.scaling, float), np.asarray(growth[name])
            slope, intercept = np.polyfit(x, y, 1)
            fit = slope * x + intercept
            r2 = 1 - float(np.sum((y - fit) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-30))
            growth[f"{name}_slope_s_per_candidate"] = float(slope)
            growth[f"{name}_intercept_s"] = float(intercept)
            growth[f"{name}_r2"] = r2
            # Linear: time per candidate stays the same from the smallest count to the largest.
            growth[f"{name}_per_candidate_largest_over_smallest"] = float((y[-1] / x[-1]) / (y[0] / x[0]))
        growth["noisytune_over_plain"] = [a / b for a, b in zip(growth["uncertainty_noisytune"],
                                                                growth["plain_forward"])]
        summary["growth"] = growth
        print(f"{'candidates':<12}{'noisytune s':>14}{'plain fwd s':>14}{'ratio':>8}")
        for n, a, b in zip(args.scaling, growth["uncertainty_noisytune"], growth["plain_forward"]):
            print(f"{n:<12}{a:>14.3f}{b:>14.3f}{a / b:>8.2f}")
        print(f"noisytune: slope {1000 * growth['uncertainty_noisytune_slope_s_per_candidate']:.2f} ms per candidate, "
              f"R^2 {growth['uncertainty_noisytune_r2']:.4f}, time per candidate at {args.scaling[-1]} / at "
              f"{args.scaling[0]}: {growth['uncertainty_noisytune_per_candidate_largest_over_smallest']:.2f}; "
              f"plain forward slope {1000 * growth['plain_forward_slope_s_per_candidate']:.2f} ms per candidate")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
