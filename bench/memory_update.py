#!/usr/bin/env python3
"""Wall time of one memory update per policy and uncertainty metric.

    python bench/memory_update.py --n_candidates=500 --device=cuda

For ``n_candidates`` generated clips (all classes seen, in-memory audio so disk
speed does not count) and a BC-ResNet on the torchlibrosa front end, it times
``select`` of every policy and, for reference, one plain forward pass over the
candidates; then prints the ratio of ``noisytune`` to ``shift`` / ``noise`` and
to the plain pass, and writes everything to ``--out`` (JSON).
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

from soundcl.task_loop import MemoryContext  # noqa: E402
from soundcl.memory import FixedSizeMemory  # noqa: E402
from soundcl.memory_scores import plain_predictions  # noqa: E402
from soundcl.models.bcresnet import BCResNet  # noqa: E402
from soundcl.models.encoders import Classifier  # noqa: E402
from soundcl.models.frontend import LogMelFrontEnd, MelBatchNorm  # noqa: E402


class BenchBrain:
    """The model parts a memory policy uses (same calls as ContinualFeatureBrain)."""

    def __init__(self, modules, device):
        self.modules = modules.to(device)
        self.device = torch.device(device)

    def compute_feats(self, wavs, lens, stage):
        return self.modules.mean_var_norm(self.modules.compute_features(wavs), lens)


def make_dataset_factory(n_samples, seed=0):
    def make_dataset(rows, train):
        data = {}
        for row in rows:
            rng = np.random.RandomState(abs(hash((seed, row["ID"]))) % 2**31)
            data[row["ID"]] = {"sig": torch.from_numpy(rng.randn(n_samples).astype(np.float32) * 0.1),
                               "class_idx": row["class_idx"]}
        dataset = sb.dataio.dataset.DynamicItemDataset(data)
        sb.dataio.dataset.set_output_keys([dataset], ["id", "sig", "class_idx"])
        return dataset
    return make_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_candidates", type=int, default=500)
    parser.add_argument("--n_classes", type=int, default=10)
    parser.add_argument("--memory_size", type=int, default=300)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per clip")
    parser.add_argument("--sample_rate", type=int, default=44100)
    parser.add_argument("--c", type=float, default=3, help="BC-ResNet width factor")
    parser.add_argument("--metric_k", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="memory_update_bench.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    n_samples = int(args.duration * args.sample_rate)
    modules = torch.nn.ModuleDict({
        "compute_features": LogMelFrontEnd(args.sample_rate),
        "mean_var_norm": MelBatchNorm(64),
        "embedding_model": BCResNet(64, c=args.c),
        "classifier": Classifier(int(round(32 * args.c)), args.n_classes),
    })
    brain = BenchBrain(modules, args.device)
    rows = [{"ID": f"clip{i:05d}", "class_idx": i % args.n_classes} for i in range(args.n_candidates)]
    rows_by_id = {r["ID"]: r for r in rows}
    make_dataset = make_dataset_factory(n_samples)

    def context(seed):
        return MemoryContext(1, brain, rows_by_id, list(range(args.n_classes)), make_dataset,
                             {"batch_size": args.batch_size}, np.random.RandomState(seed))

    def sync():
        if brain.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        fn(0)  # warm-up (cuDNN autotuning, allocator)
        times = []
        for r in range(args.repeats):
            sync()
            start = time.perf_counter()
            fn(r + 1)
            sync()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    # Data-set building (in-memory audio) is part of every measurement, as in a real update.
    results = {"plain_forward": timed(lambda s: plain_predictions([r["ID"] for r in rows], context(s)))}
    configs = [("random", None), ("reservoir", None), ("prototype", None)] + [
        ("uncertainty", m) for m in ("noisytune", "shift", "noise", "mask", "combination")
    ]
    for mem_manage, metric in configs:
        name = mem_manage if metric is None else f"uncertainty_{metric}"

        def update(seed, mem_manage=mem_manage, metric=metric):
            policy = FixedSizeMemory.from_hparams({
                "mode": "replay", "mem_manage": mem_manage, "memory_size": args.memory_size,
                "uncert_metric": metric or "noisytune", "metric_k": args.metric_k, "noise_lambda": 0.1,
                "uncertainty_from_task": 0,
            })
            policy.select([], rows, context(seed))

        results[name] = timed(update)

    ratios = {
        "noisytune/shift": results["uncertainty_noisytune"] / results["uncertainty_shift"],
        "noisytune/noise": results["uncertainty_noisytune"] / results["uncertainty_noise"],
        "noisytune/plain_forward": results["uncertainty_noisytune"] / results["plain_forward"],
    }
    device_name = torch.cuda.get_device_name(0) if brain.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"memory update, {args.n_candidates} candidates of {args.duration:g} s at {args.sample_rate} Hz, "
          f"BC-ResNet-{args.c:g}, k={args.metric_k}, memory {args.memory_size}, {device_name}")
    print(f"{'policy':<26}{'seconds':>10}")
    for name, seconds in results.items():
        print(f"{name:<26}{seconds:>10.3f}")
    for name, value in ratios.items():
        print(f"{name:<26}{value:>10.3f}")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "device": device_name, "seconds": results, "ratios": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
