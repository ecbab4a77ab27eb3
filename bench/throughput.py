#!/usr/bin/env python3
"""Is the data loader ever the bottleneck? Loader, training step and epoch in clips/s.

Generates a corpus in the real on-disk layout of the data set
(:mod:`soundcl.testing.miniatures`: real metadata rows, generated audio in the
corpus's own mix of sample rates, channel counts and bit depths), prepares it
with the data set's own ``prepare``, and measures, in one run:

* **first epoch**: decoding + resampling every clip once (the audio-cache fill of
  :func:`soundcl.data.audio.check_clips`), sequential and with ``--fill_workers``
  processes, in seconds per 1000 clips;
* **loader alone**: clips/s of the recipe's data loader (SpeechBrain
  ``make_dataloader`` over :func:`soundcl.data.audio.make_dataset`, training crops,
  shuffled) with cached and with uncached audio, for each ``--num_workers``;
  the figure is the steady rate after the first batch (worker start-up is
  reported apart: it is paid once per epoch);
* **training step alone**: clips/s of forward + loss + backward + Adam step of
  each encoder of the supervised recipes (front end, normaliser, encoder and
  classifier built from their YAML, at this data set's sample rate) on batches
  preloaded in memory;
* **epoch**: the default encoder's step fed by the real cached loader
  (``--epoch_workers`` workers), against its preloaded step time.

``loader_to_step_ratio`` (top level of the JSON) = cached-loader clips/s with
``--ratio_workers`` workers (default 0: one process, the most conservative
figure) / training-step clips/s of the default encoder (``--default_encoder``).
The goal is >= 3 on 2 CPU cores.

``--rss_clips=N`` adds the peak-memory bench: a corpus of N clips (8732 =
UrbanSound8K) is generated, cached, then read once through the cached loader
while the proportional set size (PSS) of the main process and its workers is
sampled at every batch: it stays bounded when clips are read per batch.

    PYTHONPATH=modules python bench/throughput.py --out=throughput.json
    PYTHONPATH=modules python bench/throughput.py --dataset=tau19 --out=tau.json       # 10 s clips at 48 kHz
    PYTHONPATH=modules python bench/throughput.py --clips_per_cell=4 --batch_size=32 --step_batches=4
    PYTHONPATH=modules python bench/throughput.py --encoders=cnn14 --rss_clips=8732 --rss_clip_seconds=4

Torch runs ``--threads`` CPU threads (default 1, the YAMLs' ``cpu_threads``).
Measured numbers: bench/README.md.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "modules"))

import speechbrain as sb  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402

from soundcl.data.audio import AudioPipeline, check_clips, make_dataset  # noqa: E402
from soundcl.data.manifest import read_manifest  # noqa: E402
from soundcl.testing import miniatures  # noqa: E402

#: Encoders of the supervised recipes: name -> {data set: YAML that defines front end, normaliser, encoder and
#: classifier at that data set's rate}. A data set without an entry uses the "us8k" one at its own rate.
ENCODERS = {
    "small_cnn": {"us8k": "hparams/synth/sup_train.yaml"},
    "bcresnet": {"us8k": "hparams/us8k/replay_train.yaml", "tau19": "hparams/tau19/replay_train.yaml"},
    "cnn14": {"us8k": "hparams/us8k/sup_train.yaml", "tau19": "hparams/tau19/sup_train.yaml"},
    "dsmn": {"us8k": "hparams/tau22/dsmn_train.yaml"},
}


def _make_us8k(folder, clips_per_cell, clip_seconds):
    return miniatures.make_us8k(folder, miniatures.default_shared_data_dir(), clips_per_class_per_fold=clips_per_cell,
                                clip_seconds=clip_seconds)


def _make_tau19(folder, clips_per_cell, clip_seconds):
    return miniatures.make_tau19(folder, miniatures.default_shared_data_dir(), clips_per_class=clips_per_cell,
                                 clip_seconds=clip_seconds)


def _prepare_us8k(data_folder, save_folder):
    from soundcl.data import us8k

    return us8k.prepare(data_folder, save_folder)


def _prepare_tau19(data_folder, save_folder):
    from soundcl.data import tau19

    return tau19.prepare(data_folder, save_folder)


#: Data sets: real clip length and the sample rate of their sup_train YAML.
DATASETS = {
    "us8k": {"make": _make_us8k, "prepare": _prepare_us8k, "clip_seconds": 4.0, "sample_rate": 16000,
             "cell": "class and fold"},
    "tau19": {"make": _make_tau19, "prepare": _prepare_tau19, "clip_seconds": 10.0, "sample_rate": 48000,
              "cell": "scene (train and evaluate each)"},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="us8k")
    parser.add_argument("--clips_per_cell", type=int, default=1,
                        help="generated clips per cell of the metadata (us8k: class x fold -> 100 clips per 1)")
    parser.add_argument("--clip_seconds", type=float, default=None, help="default: the data set's real length")
    parser.add_argument("--sample_rate", type=int, default=None, help="target rate (default: the sup_train YAML's)")
    parser.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated subset of "
                        + ", ".join(ENCODERS) + " (passt is added when the passt package is installed)")
    parser.add_argument("--default_encoder", default="cnn14", help="encoder of loader_to_step_ratio and the epoch")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", default="0,2,4", help="loader worker counts measured")
    parser.add_argument("--ratio_workers", type=int, default=0, help="worker count of loader_to_step_ratio")
    parser.add_argument("--epoch_workers", type=int, default=2, help="loader workers of the epoch measurement")
    parser.add_argument("--fill_workers", type=int, default=2, help="workers of the parallel cache fill")
    parser.add_argument("--step_batches", type=int, default=2, help="timed training steps per encoder (+1 warm-up)")
    parser.add_argument("--epoch_batches", type=int, default=2, help="timed batches of each loader-fed pass")
    parser.add_argument("--epoch_repeats", type=int, default=2, help="alternated loader-fed / preloaded rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the YAMLs' cpu_threads)")
    parser.add_argument("--rss_clips", type=int, default=0, help="peak-memory bench over this many clips (0: off)")
    parser.add_argument("--rss_clip_seconds", type=float, default=4.0)
    parser.add_argument("--work_dir", default=None, help="corpus and caches (default: a temporary folder, removed)")
    parser.add_argument("--out", default="throughput.json")
    args = parser.parse_args(argv)
    spec = DATASETS[args.dataset]
    args.clip_seconds = args.clip_seconds or spec["clip_seconds"]
    args.sample_rate = args.sample_rate or spec["sample_rate"]
    args.num_workers = [int(n) for n in args.num_workers.split(",")]
    args.encoders = args.encoders.split(",")
    unknown = [name for name in args.encoders if name not in ENCODERS and name != "passt"]
    if unknown:
        parser.error(f"unknown encoders {unknown}; known: {sorted(ENCODERS)}")
    if args.default_encoder not in args.encoders:
        parser.error(f"--default_encoder={args.default_encoder} is not among --encoders={','.join(args.encoders)}")
    if args.ratio_workers not in args.num_workers:
        parser.error(f"--ratio_workers={args.ratio_workers} is not among --num_workers")
    return args


# ---------------------------------------------------------------------------------- corpus
def build_corpus(args, folder, spec, clips_per_cell, clip_seconds):
    """Generate the corpus and return its training rows (all tasks together) and generation time."""
    start = time.perf_counter()
    data_folder = spec["make"](os.path.join(folder, "data"), clips_per_cell, clip_seconds)
    generated_s = time.perf_counter() - start
    info = spec["prepare"](data_folder, os.path.join(folder, "save"))
    rows = [row for split in ("train", "valid", "test") for path in info["manifests"][split] for row in read_manifest(path)]
    unique = list({row["ID"]: row for row in rows}.values())
    return unique, generated_s


# ---------------------------------------------------------------------------------- loader
def loader_pass(rows, audio, batch_size, num_workers, on_batch=None):
    """One shuffled pass of the training loader; returns timings in seconds.

    ``first_batch_s``: until the first batch (worker start-up included);
    ``steady_clips_per_s``: the rate after the first batch.
    """
    dataset = make_dataset(rows, audio, train=True)
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size, shuffle=True,
                                                  num_workers=num_workers)
    start = time.perf_counter()
    first, n_clips, n_first = None, 0, 0
    for batch in loader:
        n_clips += len(batch.id)
        if first is None:
            first, n_first = time.perf_counter(), len(batch.id)
        if on_batch is not None:
            on_batch(batch, n_clips)
    end = time.perf_counter()
    steady = (n_clips - n_first) / (end - first) if n_clips > n_first and end > first else float("nan")
    return {"clips": n_clips, "total_s": end - start, "first_batch_s": first - start,
            "clips_per_s": n_clips / (end - start), "steady_clips_per_s": steady}


def preload_batches(rows, audio, batch_size, n_batches):
    """``n_batches`` batches of the cached training loader (rows repeated as needed), kept in memory."""
    preload_rows = (rows * (1 + batch_size * n_batches // len(rows)))[: batch_size * n_batches]
    preload_rows = [dict(r, ID=f"{r['ID']}#{i}") for i, r in enumerate(preload_rows)]
    return list(sb.dataio.dataloader.make_dataloader(make_dataset(preload_rows, audio, train=True),
                                                     batch_size=batch_size))


def cache_fill(rows, audio, num_workers):
    """Time of decoding + resampling + caching every clip once (the first epoch's one-time cost)."""
    start = time.perf_counter()
    bad = check_clips(rows, audio, num_workers=num_workers, min_parallel_clips=1)
    seconds = time.perf_counter() - start
    if bad:
        raise RuntimeError(f"generated clips failed to decode: {sorted(bad)[:5]}")
    return {"workers": num_workers, "seconds": seconds, "seconds_per_1000_clips": 1000 * seconds / len(rows)}


# ---------------------------------------------------------------------------------- training step
def build_model(name, dataset, sample_rate, work_dir):
    """Front end, normaliser, augmentation, encoder and classifier of ``name``'s YAML at ``sample_rate``."""
    if name == "passt":
        raise NotImplementedError("passt: no recipe YAML defines it yet")
    path = os.path.join(REPO_ROOT, ENCODERS[name].get(dataset, ENCODERS[name]["us8k"]))
    with open(path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"data_folder": work_dir, "output_base": os.path.join(work_dir, "yaml_out"),
                                       "sample_rate": sample_rate})
    modules = torch.nn.ModuleDict({k: hparams["modules"][k] for k in
                                   ("compute_features", "mean_var_norm", "embedding_model", "classifier")})
    return modules, hparams.get("augmentation"), hparams["opt_class"]


def train_step(modules, augmentation, optimizer, wavs, lens, targets, autocast=None):
    """One step as ContinualFeatureBrain + SupervisedBrain do it (no mixup): features, norm, encoder, CE, Adam.

    ``autocast``: a context-manager factory wrapping the forward pass (mixed precision, as SpeechBrain's
    ``precision`` does: forward and loss under autocast, backward and step outside)."""
    with autocast() if autocast is not None else contextlib.nullcontext():
        feats = modules.compute_features(wavs)
        feats = modules.mean_var_norm(feats, lens)
        if augmentation is not None:
            feats = augmentation(feats)
        logits = modules.classifier(modules.embedding_model(feats, lens))
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def batch_tensors(batch):
    """(wavs, lens, targets) of a loader batch."""
    wavs, lens = batch.sig
    return wavs, lens, torch.as_tensor(batch.class_idx, dtype=torch.long)


def batch_step(model, batch):
    """One training step of ``model`` = (modules, augmentation, optimizer) on a loader batch (CPU)."""
    modules, augmentation, optimizer = model
    return train_step(modules, augmentation, optimizer, *batch_tensors(batch))


def time_steps(model, batches, step=batch_step):
    """Clips/s of ``step(model, batch)`` over ``batches`` (the first one a warm-up, not timed)."""
    step(model, batches[0])
    start = time.perf_counter()
    n = 0
    for batch in batches[1:]:
        step(model, batch)
        n += len(batch.id)
    seconds = time.perf_counter() - start
    return {"clips": n, "seconds": seconds, "clips_per_s": n / seconds}


def step_rate(name, args, batches, work_dir):
    """Clips/s of the training step of ``name`` on preloaded ``batches`` (first one = warm-up)."""
    modules, augmentation, opt_class = build_model(name, args.dataset, args.sample_rate, work_dir)
    modules.train()
    model = (modules, augmentation, opt_class(modules.parameters()))
    result = time_steps(model, batches)
    result["parameters"] = sum(p.numel() for p in modules.parameters())
    return result, model


def epoch_rate(model, rows, audio, preloaded, args, step=batch_step):
    """The step fed by the real cached loader against the same step on preloaded batches.

    Each of ``--epoch_repeats`` rounds runs a loader-fed pass (a fresh loader with
    ``--epoch_workers`` workers; its first batch is a warm-up, so worker start-up is
    left out) and then as many steps on ``preloaded`` batches; alternating the two
    puts a change of load on the shared machine on both. Returns the medians and the
    time the step loop spent waiting for the loader. ``step(model, batch)``: one training step.
    """
    n_rows = min(len(rows), args.batch_size * (args.epoch_batches + 1))
    fed, pre, waits = [], [], []
    for _ in range(args.epoch_repeats):
        steps = []  # (clips, batch arrived, step done)

        def on_batch(batch, n_clips):
            arrived = time.perf_counter()
            step(model, batch)
            steps.append((len(batch.id), arrived, time.perf_counter()))

        loader_pass(rows[:n_rows], audio, args.batch_size, args.epoch_workers, on_batch=on_batch)
        clips = sum(n for n, _, _ in steps[1:])
        fed.append((steps[-1][2] - steps[0][2]) / clips)  # seconds per clip, loader included
        waits.append(sum(steps[i + 1][1] - steps[i][2] for i in range(len(steps) - 1)))
        start = time.perf_counter()
        for batch in preloaded[: len(steps) - 1]:
            step(model, batch)
        pre.append((time.perf_counter() - start) / sum(len(b.id) for b in preloaded[: len(steps) - 1]))
    fed_s, pre_s = float(np.median(fed)), float(np.median(pre))
    return {"workers": args.epoch_workers, "repeats": args.epoch_repeats, "batches_per_repeat": len(steps) - 1,
            "loader_fed_clips_per_s": 1 / fed_s, "preloaded_clips_per_s": 1 / pre_s,
            "step_time_with_loader_over_preloaded": fed_s / pre_s,
            "per_repeat_ratio": [f / p for f, p in zip(fed, pre)],
            "loader_wait_s": waits, "loader_wait_fraction": float(sum(waits) / (sum(fed) * clips))}


# ---------------------------------------------------------------------------------- memory
def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def process_tree_pss_mb():
    """PSS (shared pages split between processes, so forked workers are not counted twice) of this process and its
    children, in MiB; and the main process alone."""
    me = os.getpid()
    main = _pss_kb(me)
    return (main + sum(_pss_kb(pid) for pid in _children(me))) / 1024, main / 1024


def rss_bench(args, work_dir):
    """Generate ``rss_clips`` clips, fill the cache, read them all once through the cached loader sampling memory."""
    spec = DATASETS["us8k"]
    # us8k: 100 (class, fold) cells of up to ~150 real rows; every real row up to 8732, then cut to rss_clips.
    per_cell = max(1000, -(-args.rss_clips // 100))
    folder = os.path.join(work_dir, "rss")
    rows, generated_s = build_corpus(args, folder, spec, per_cell, args.rss_clip_seconds)
    if len(rows) < args.rss_clips:
        print(f"note: the US8K layout gave {len(rows)} clips, fewer than --rss_clips={args.rss_clips}")
    rows = rows[: args.rss_clips]
    audio = AudioPipeline(spec["sample_rate"], spec["clip_seconds"], cache_folder=os.path.join(folder, "cache"))
    fill = cache_fill(rows, audio, args.fill_workers)
    cache_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(audio.cache_folder) for f in fs) / 2**20
    samples = []
    every = max(1, len(rows) // args.batch_size // 200)

    def on_batch(batch, n_clips):
        if len(samples) == 0 or (n_clips // args.batch_size) % every == 0:
            samples.append((n_clips, *process_tree_pss_mb()))

    before = process_tree_pss_mb()
    result = loader_pass(rows, audio, args.batch_size, args.epoch_workers, on_batch=on_batch)
    samples.append((result["clips"], *process_tree_pss_mb()))
    tenth = [s for s in samples if s[0] <= len(rows) / 10] or samples[:1]
    peak_early = max(s[1] for s in tenth)
    peak = max(s[1] for s in samples)
    # Bounded: the second half of the pass needs no more memory than the first (all clips held would add the cache).
    during = samples[:-1] or samples
    first_half = max(s[1] for s in during if s[0] <= len(rows) / 2)
    second_half = max([s[1] for s in during if s[0] > len(rows) / 2] or [first_half])
    return {"clips": len(rows), "clip_seconds": args.rss_clip_seconds, "generated_s": generated_s, "fill": fill,
            "cache_mb": cache_mb, "workers": args.epoch_workers, "pss_before_mb": before[0],
            "peak_pss_first_tenth_mb": peak_early, "peak_pss_mb": peak, "growth_after_first_tenth_mb": peak - peak_early,
            "peak_pss_first_half_mb": first_half, "peak_pss_second_half_mb": second_half,
            "growth_second_half_over_first_mb": second_half - first_half,
            "loader": result, "samples": samples}


# ---------------------------------------------------------------------------------- main
def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    own_dir = args.work_dir is None
    work_dir = tempfile.mkdtemp(prefix="soundcl_throughput_") if own_dir else os.path.abspath(args.work_dir)
    spec = DATASETS[args.dataset]
    try:
        summary = run(args, spec, work_dir)
    finally:
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return summary


def run(args, spec, work_dir):
    rows, generated_s = build_corpus(args, os.path.join(work_dir, args.dataset), spec, args.clips_per_cell,
                                     args.clip_seconds)
    n = len(rows)
    print(f"{args.dataset}: {n} clips of {args.clip_seconds:g} s generated in {generated_s:.1f} s "
          f"({spec['cell']}: {args.clips_per_cell}), target {args.sample_rate} Hz, batch {args.batch_size}, "
          f"{args.threads} torch thread(s), {os.cpu_count()} CPUs")

    def pipeline(cache):
        return AudioPipeline(args.sample_rate, args.clip_seconds,
                             cache_folder=os.path.join(work_dir, f"cache_{cache}") if cache else None)

    # First epoch: the one-time decode + resample, sequential and parallel (two separate caches).
    fill = {"sequential": cache_fill(rows, pipeline("seq"), 0),
            "parallel": cache_fill(rows, pipeline("par"), args.fill_workers)}
    fill["speedup"] = fill["sequential"]["seconds"] / fill["parallel"]["seconds"]
    print(f"cache fill (decode + resample once): {fill['sequential']['seconds_per_1000_clips']:.1f} s per 1000 clips "
          f"sequential, {fill['parallel']['seconds_per_1000_clips']:.1f} s with {args.fill_workers} workers "
          f"({fill['speedup']:.2f}x)")

    loader = {"cached": {}, "uncached": {}}
    for workers in args.num_workers:
        for kind, audio in (("cached", pipeline("seq")), ("uncached", pipeline(None))):
            loader[kind][str(workers)] = loader_pass(rows, audio, args.batch_size, workers)
    print(f"{'loader clips/s (steady)':<26}" + "".join(f"{f'workers={w}':>12}" for w in args.num_workers))
    for kind in ("cached", "uncached"):
        print(f"{kind:<26}" + "".join(f"{loader[kind][str(w)]['steady_clips_per_s']:>12.1f}" for w in args.num_workers))

    # Preloaded batches: the cached loader's own output, kept in memory.
    batches = preload_batches(rows, pipeline("seq"), args.batch_size, max(args.step_batches, args.epoch_batches) + 1)
    encoders = list(args.encoders)
    notes = {}
    if "passt" not in encoders:
        notes["passt"] = "not measured: no soundcl recipe YAML defines a PaSST encoder"
    step, default_model = {}, None
    for name in encoders:
        try:
            step[name], model = step_rate(name, args, batches[: args.step_batches + 1], work_dir)
        except NotImplementedError as err:
            notes[name] = str(err)
            continue
        except RuntimeError as err:  # e.g. a 16 kHz front end (window longer than n_fft at 48 kHz)
            notes[name] = f"its YAML's front end does not run at {args.sample_rate} Hz: {str(err).splitlines()[0][:160]}"
            continue
        if name == args.default_encoder:
            default_model = model
        print(f"training step {name:<10} {step[name]['clips_per_s']:8.2f} clips/s "
              f"({step[name]['parameters'] / 1e6:.2f} M parameters)")
    for name, note in notes.items():
        print(f"{name}: {note}")

    if args.default_encoder not in step:
        raise SystemExit(f"error: the default encoder {args.default_encoder} was not measured: "
                         f"{notes[args.default_encoder]}")
    epoch = epoch_rate(default_model, rows, pipeline("seq"), batches[1:], args)
    cached_rate = loader["cached"][str(args.ratio_workers)]["steady_clips_per_s"]
    step_default = step[args.default_encoder]["clips_per_s"]
    ratio = cached_rate / step_default
    per_encoder = {name: cached_rate / s["clips_per_s"] for name, s in step.items()}
    epoch_over_step = epoch["step_time_with_loader_over_preloaded"]
    print(f"epoch ({args.default_encoder}, cached loader, {args.epoch_workers} workers, median of "
          f"{args.epoch_repeats} alternated rounds): {epoch['loader_fed_clips_per_s']:.2f} clips/s fed by the loader, "
          f"{epoch['preloaded_clips_per_s']:.2f} preloaded; step time with the loader / preloaded {epoch_over_step:.3f} "
          f"(per round " + ", ".join(f"{r:.2f}" for r in epoch["per_repeat_ratio"]) + "); waiting for batches "
          f"{100 * epoch['loader_wait_fraction']:.1f} % of the loader-fed time")
    print(f"loader_to_step_ratio ({args.default_encoder}, cached, {args.ratio_workers} workers): {ratio:.1f} "
          f"(goal >= 3); per encoder: " + ", ".join(f"{k} {v:.1f}" for k, v in per_encoder.items()))
    summary = {
        "loader_to_step_ratio": ratio,
        "loader_to_step_ratio_per_encoder": per_encoder,
        "epoch_step_time_over_preloaded": epoch_over_step,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()},
        "args": {k: v for k, v in vars(args).items()},
        "clips": n, "generated_s": generated_s,
        "cache_fill": fill, "loader": loader, "training_step": step, "epoch": epoch, "notes": notes,
    }
    if args.rss_clips:
        rss = rss_bench(args, work_dir)
        summary["peak_memory"] = rss
        print(f"peak memory, {rss['clips']} cached clips of {rss['clip_seconds']:g} s ({rss['cache_mb']:.0f} MiB of "
              f"cache), one pass with {rss['workers']} workers: PSS {rss['peak_pss_first_tenth_mb']:.0f} MiB after "
              f"the first tenth, peak {rss['peak_pss_mb']:.0f} MiB (+{rss['growth_after_first_tenth_mb']:.0f} MiB), "
              f"second half over first half {rss['growth_second_half_over_first_mb']:+.0f} MiB; "
              f"cache fill {rss['fill']['seconds_per_1000_clips']:.1f} s per 1000 clips")
    return summary


if __name__ == "__main__":
    main()
