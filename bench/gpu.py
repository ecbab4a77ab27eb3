#!/usr/bin/env python3
"""Every GPU check of soundcl in one command: correctness of each recipe family on the device, throughput,
the UrbanSound8K-epoch extrapolation and peak GPU memory; one JSON and one table.

    PYTHONPATH=modules python bench/gpu.py --device=cuda:0 --out=/tmp/gpu              # the GPU run (< 8 min, H200)
    PYTHONPATH=modules python bench/gpu.py --device=cpu --tiny --out=/tmp/gpu_tiny     # CI: < 1 min on 2 cores
    ... --only=recipes,cnn14                                                         # rerun some sections

Sections (``--only`` names):

* ``recipes``: each recipe family (sup_train with the derpp strategy, replay_train with the noisytune memory,
  simclr_train, linclf_train on the CPU SimCLR run's checkpoints, dsmn_train, sit_train with a tiny PaSST) runs
  2 tasks of the synthetic set (SIT: its 2 stages on the CochlScene / TAU 2022 miniatures) as a subprocess,
  ``python recipes/<name>.py hparams/...yaml --device=... --precision=...``: once on the CPU in fp32 (the
  reference) and on ``--device`` in every ``--precisions`` (SpeechBrain's ``--precision``: autocast). A run
  passes when it exits 0, every number of its results.json is finite, and it is comparable to the reference:
  A_last within ``--acc_atol`` and the first training loss within ``--loss_rtol`` (relative). With
  ``--device=cpu`` the device runs are CPU runs too (bf16: CPU autocast).
* ``cnn14``: training step (forward, CE, backward, Adam; front end on the device) of the us8k sup_train YAML's
  CNN14 (``--tiny``: the synth YAML's small CNN), batch 32 of 4 s at 16 kHz, in fp32 and bf16 on batches
  preloaded on the device, then in bf16 fed by the real cached loader (``bench/throughput.py``'s
  ``epoch_rate``: alternated rounds, goal: step time with the loader within 20 % of the preloaded one); the
  first-epoch decode + resample + cache fill of the corpus (UrbanSound8K layout, mixed rates and formats); and
  the moonshot: one UrbanSound8K-size epoch (7,000 clips of 4 s, CNN14, bf16) in seconds including data,
  EXTRAPOLATED from the measured loader-fed steady rate (goal ~5 s: ~350 TFLOP at ~7 % of an H100/H200's
  bf16 peak).
* ``passt``: PaSST (hear21passt's passt_s_swa_p16_128_ap476, random weights, the published training patchout
  40 x 4) forward + backward clips/s on 10 s at 32 kHz in bf16 (``--tiny``: a 1-layer PaSST on 1 s).
* ``noisytune``: ``bench/memory_update.py`` on the device: noisytune memory update / one plain forward pass.
* ``linear_eval``: ``bench/linear_eval.py`` on the device: linear evaluation re-encoding every epoch / cached.

Every figure is in ``<out>/gpu.json`` (``figures``: value, unit, goal, note; a figure that cannot exist on this
device, e.g. GPU memory on a CPU, has ``value: null`` and its reason) with the machine, the recipe runs and the
per-section wall times; ``<out>/gpu.md`` is the table; recipe logs are in ``<out>/logs/``. Peak GPU memory
(``torch.cuda.max_memory_allocated``) is recorded per configuration. The exit status is 1 when a check fails
or a figure is missing or not finite. ``--budget_s`` (default 450) stops starting sections that would not fit:
their figures are then missing (exit 1), the JSON says which.
"""
import argparse
import concurrent.futures
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = os.path.join(REPO_ROOT, "modules")
sys.path.insert(0, MODULES)

# soundcl internals this script imports (all in this one place).
from soundcl.data import synthetic  # noqa: E402
from soundcl.models import passt  # noqa: E402
from soundcl.testing.miniatures import make_cochl, make_tau22  # noqa: E402


def load_bench(name):
    """``bench/<name>.py`` as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(REPO_ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throughput = load_bench("throughput")

SECTIONS = ("recipes", "cnn14", "passt", "noisytune", "linear_eval")

#: Sizes of the full (GPU) run and of --tiny (CPU, CI).
SIZES = {
    "full": dict(
        recipe_clips=8, recipe_epochs=2, recipe_encoder=[], recipe_parallel_cpu=6, recipe_parallel_device=3,
        encoder="cnn14", corpus_cells=8, clip_seconds=4.0, batch_size=32, step_batches=20, loader_batches=20,
        loader_repeats=2, loader_workers=min(8, os.cpu_count() or 1), fill_workers=min(8, os.cpu_count() or 1),
        passt=dict(), passt_patchout=(40, 4), passt_seconds=10.0, passt_batch=16, passt_steps=10,
        noisytune=["--n_candidates=1000", "--duration=4", "--batch_size=32", "--repeats=3", "--metric_k=4"],
        linear_eval=["--encoder=cnn14", "--measure_epochs=2", "--number_of_epochs=30"],
        linear_eval_extra=["--batch_size=32"],
        estimate_s={"recipes": 150, "cnn14": 90, "passt": 40, "noisytune": 30, "linear_eval": 120},
    ),
    "tiny": dict(
        recipe_clips=2, recipe_epochs=1, recipe_encoder=["--encoder_channels=[8,16]", "--emb_dim=32", "--n_mels=32"],
        recipe_parallel_cpu=2, recipe_parallel_device=2,
        encoder="small_cnn", corpus_cells=1, clip_seconds=0.5, batch_size=8, step_batches=2, loader_batches=2,
        loader_repeats=1, loader_workers=1, fill_workers=1,
        passt=dict(depth=1, embed_dim=32, num_heads=2, input_tdim=198), passt_patchout=(0, 0), passt_seconds=1.0,
        passt_batch=4, passt_steps=2,
        noisytune=["--n_candidates=8", "--duration=0.25", "--batch_size=8", "--repeats=1", "--metric_k=2"],
        linear_eval=["--encoder=synth", "--measure_epochs=1", "--number_of_epochs=30"],
        linear_eval_extra=[],
        estimate_s={"recipes": 40, "cnn14": 10, "passt": 5, "noisytune": 5, "linear_eval": 20},
    ),
}

#: UrbanSound8K-size epoch of the moonshot: training clips of ~8 folds, 4 s each.
US8K_EPOCH_CLIPS = 7000
US8K_CLIPS = 8732
#: The issue's estimate of one such CNN14 epoch (forward + backward), and the goal.
US8K_EPOCH_TFLOP = 350.0
MOONSHOT_GOAL_S = 5.0


# ---------------------------------------------------------------------------------- figures
def figure(value, unit, goal=None, note=""):
    value = None if value is None else float(value)
    return {"value": value, "unit": unit, "goal": goal, "note": note}


def not_applicable(unit, reason):
    """A figure that cannot exist on this device (not a failure)."""
    return {"value": None, "unit": unit, "goal": None, "note": reason, "not_applicable": True}


def missing(unit, reason):
    """A figure that should exist but was not produced (a failure)."""
    return {"value": None, "unit": unit, "goal": None, "note": reason, "missing": True}


#: Every figure the script produces: key -> (unit, goal).
FIGURES = {
    "cnn14.train_step_fp32_clips_per_s": ("clips/s", None),
    "cnn14.train_step_bf16_clips_per_s": ("clips/s", None),
    "cnn14.bf16_speedup_over_fp32": ("x", None),
    "cnn14.loader_fed_bf16_clips_per_s": ("clips/s", None),
    "cnn14.loader_fed_over_preloaded_step_time": ("ratio", "<= 1.2"),
    "cnn14.loader_wait_fraction": ("fraction", None),
    "cnn14.first_epoch_fill_s_per_1000_clips": ("s", None),
    "cnn14.us8k_epoch_s_extrapolated": ("s", f"~{MOONSHOT_GOAL_S:g}"),
    "cnn14.us8k_first_epoch_s_extrapolated": ("s", None),
    "cnn14.us8k_epoch_tflop_per_s": ("TFLOP/s", None),
    "passt.train_step_bf16_clips_per_s": ("clips/s", None),
    "noisytune.over_plain_forward": ("ratio", "<= 1.3"),
    "linear_eval.reencoding_over_cached": ("ratio", ">= 10"),
    "linear_eval.reencoding_over_cached_measured": ("ratio", None),
    "memory.cnn14_fp32_peak_mib": ("MiB", None),
    "memory.cnn14_bf16_peak_mib": ("MiB", None),
    "memory.cnn14_bf16_loader_peak_mib": ("MiB", None),
    "memory.passt_bf16_peak_mib": ("MiB", None),
    "memory.noisytune_peak_mib": ("MiB", None),
}


def _section_of(key):
    """Section producing figure ``key`` (memory.<section>_..., or <section>.<name>)."""
    if key.startswith("memory."):
        return next(s for s in SECTIONS if key[len("memory."):].startswith(s + "_"))
    return key.split(".")[0]


def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------------- device helpers
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_factory(device, precision):
    if precision == "fp32":
        return None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return lambda: torch.autocast(device.type, dtype=dtype)


def device_step(device, precision):
    """``step(model, batch)``: the throughput bench's training step on ``device`` (batch moved there if it is not)."""
    autocast = autocast_factory(device, precision)

    def step(model, batch):
        modules, augmentation, optimizer = model
        wavs, lens, targets = (t.to(device, non_blocking=True) for t in throughput.batch_tensors(batch))
        loss = throughput.train_step(modules, augmentation, optimizer, wavs, lens, targets, autocast=autocast)
        sync(device)  # as a Brain does (loss.detach().cpu() every step)
        return loss

    return step


class PeakMemory:
    """``torch.cuda.max_memory_allocated`` over a block, in MiB (a not-applicable figure on a CPU)."""

    def __init__(self, device):
        self.device = device
        self.mib = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False

    def figure(self, what):
        if self.device.type != "cuda":
            return not_applicable("MiB", f"{what}: no CUDA device (torch.cuda.max_memory_allocated is CUDA only)")
        return figure(self.mib, "MiB", note=what)


def machine_info(device):
    import speechbrain

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": throughput._git_commit(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "torch": torch.__version__,
            "speechbrain": speechbrain.__version__, "torch_cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, device_memory_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info.update(device_name=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads())
    return info


# ---------------------------------------------------------------------------------- recipes
def recipe_families(sizes, data_folder, miniatures):
    """family -> (recipe, YAML, overrides); linclf_train's encoder checkpoints (its SimCLR run's) are added per run."""
    synth = [f"--data_folder={data_folder}", f"--clips_per_class_per_fold={sizes['recipe_clips']}",
             f"--number_of_epochs={sizes['recipe_epochs']}", "--task_classes=[[0,1],[2,3]]"]
    encoder = sizes["recipe_encoder"]
    cochl, tau22 = miniatures
    return {
        "sup_train_derpp": ("sup_train", "hparams/synth/sup_train.yaml",
                            [*synth, *encoder, "--strategy=derpp", "--memory_size=8"]),
        "replay_train_noisytune": ("replay_train", "hparams/synth/replay_train.yaml",
                                   [*synth, "--mode=replay", "--mem_manage=uncertainty", "--uncert_metric=noisytune",
                                    "--memory_size=8", "--metric_k=2", "--uncertainty_from_task=0"]),
        "simclr_train": ("simclr_train", "hparams/synth/simclr_train.yaml", [*synth, *encoder]),
        "dsmn_train": ("dsmn_train", "hparams/synth/dsmn_train.yaml",
                       [*synth, "--dsmn_channels=[8,8,8]", "--calibration_batches=2"]),
        "sit_train_passt": ("sit_train", "hparams/tau22/sit_train.yaml",
                            [f"--cochl_folder={cochl}", f"--tau22_folder={tau22}", "--passt_depth=1",
                             "--passt_embed_dim=32", "--passt_heads=2", "--passt_input_tdim=198",
                             f"--number_of_epochs={sizes['recipe_epochs']}", "--batch_size=8",
                             "--train_dataloader_opts={batch_size: 8, shuffle: True, num_workers: 0}",
                             "--eval_dataloader_opts={batch_size: 8, num_workers: 0}"]),
        "linclf_train": ("linclf_train", "hparams/synth/linclf_train.yaml", [*synth, *encoder]),  # after simclr
    }


def run_name(family, device, precision):
    return f"{family}_{str(device).replace(':', '')}_{precision}"


def read_recipe_results(folder):
    """What the checks read from a finished run: accuracy matrix, A_last, first training loss, best valid losses."""
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    first_loss = None
    log = os.path.join(folder, "train_log.txt")
    if os.path.exists(log):
        with open(log, encoding="utf-8") as f:
            match = re.search(r"train loss: ([-+0-9.eEnaif]+)", f.read())
        first_loss = float(match.group(1)) if match else None
    numbers = [v for row in results["accuracy_matrix"] for v in row if v is not None]
    valid = [t.get("best_valid", {}).get("loss") for t in results.get("per_task", [])]
    numbers += [results.get("A_last"), first_loss, *[v for v in valid if v is not None]]
    return {"A_last": results.get("A_last"), "accuracy_matrix": results["accuracy_matrix"],
            "first_train_loss": first_loss, "best_valid_loss": valid,
            "finished_tasks": results.get("finished_tasks"),
            "finite": bool(numbers) and all(finite(v) for v in numbers) and first_loss is not None}


def recipe_command(family, spec, device, precision, work, extra=()):
    """(recipe script, argv) of one run: ``python <script> <argv>`` is its command line."""
    recipe, yaml, overrides = spec
    return os.path.join(REPO_ROOT, "recipes", f"{recipe}.py"), [
        os.path.join(REPO_ROOT, yaml), f"--output_base={work}", f"--audio_cache={work}/audio_cache",
        f"--experiment_name={run_name(family, device, precision)}", f"--device={device}",
        f"--precision={precision}", "--noprogressbar", *overrides, *extra]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([MODULES, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def run_recipes(runs, log_path, timeout_s):
    """Run ``runs`` ([(script, argv)]) in one subprocess, one after the other; returns (exit status, wall s) each.

    One run: ``python recipes/<name>.py <argv>``. Several (--tiny): one process runs each recipe's ``main`` in
    turn (``--recipe_batch``, as the tests run recipes), paying the interpreter and import start-up once.
    """
    status_path = log_path + ".status.json"
    start = time.perf_counter()
    if len(runs) == 1:
        command = [sys.executable, runs[0][0], *runs[0][1]]
    else:
        with open(log_path + ".runs.json", "w", encoding="utf-8") as f:
            json.dump({"runs": runs, "status": status_path}, f)
        command = [sys.executable, os.path.abspath(__file__), f"--recipe_batch={log_path}.runs.json"]
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=REPO_ROOT,
                                  timeout=max(1.0, timeout_s)).returncode
    except subprocess.TimeoutExpired:
        code = None
    if len(runs) == 1:
        return [(code, time.perf_counter() - start)]
    try:
        with open(status_path, encoding="utf-8") as f:
            done = [tuple(d) for d in json.load(f)]
    except (OSError, ValueError):
        done = []
    return done + [(code if code else None, None)] * (len(runs) - len(done))


def recipe_batch(path):
    """Child of :func:`run_recipes`: each run's ``main(argv)`` in turn; exit statuses written after each."""
    import runpy

    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    done = []
    for script, argv in spec["runs"]:
        print(f"==== python {os.path.relpath(script, REPO_ROOT)} {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        try:
            runpy.run_path(script, run_name="gpu_bench_recipe")["main"](list(argv))
            code = 0
        except BaseException:  # noqa: BLE001 - SystemExit of a refused option included: recorded, next run
            traceback.print_exc()
            code = 1
        done.append((code, time.perf_counter() - start))
        with open(spec["status"], "w", encoding="utf-8") as f:
            json.dump(done, f)
    return 0


def run_record(family, device, precision, script, argv, status, work, log_path):
    code, wall_s = status
    record = {"family": family, "device": str(device), "precision": precision,
              "command": f"python {os.path.relpath(script, REPO_ROOT)} {' '.join(argv)}", "returncode": code,
              "wall_s": wall_s, "log": os.path.basename(log_path)}
    folder = os.path.join(work, run_name(family, device, precision), "1986")
    record["save"] = os.path.join(folder, "save")
    if code == 0:
        try:
            record.update(read_recipe_results(folder))
        except (OSError, ValueError, KeyError) as err:
            record["error"] = f"results unreadable: {err}"
    else:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-600:]
        record["error"] = ("timed out (budget)" if code is None else f"exit {code}") + f": {tail}"
    return record


def compare(run, ref, acc_atol, loss_rtol):
    """Whether ``run`` is comparable to the CPU fp32 reference ``ref``."""
    if not (run.get("finite") and ref.get("finite")):
        return {"comparable": False, "reason": "a result is missing or not finite"}
    a_diff = abs(run["A_last"] - ref["A_last"])
    loss_diff = abs(run["first_train_loss"] - ref["first_train_loss"]) / max(abs(ref["first_train_loss"]), 1e-12)
    pairs = [(a, b) for ra, rb in zip(run["accuracy_matrix"], ref["accuracy_matrix"]) for a, b in zip(ra, rb)
             if a is not None and b is not None]
    valid = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(run.get("best_valid_loss", []),
                                                             ref.get("best_valid_loss", [])) if None not in (a, b)]
    return {"comparable": a_diff <= acc_atol and loss_diff <= loss_rtol, "A_last_abs_diff": a_diff,
            "first_train_loss_rel_diff": loss_diff, "accuracy_max_abs_diff": max(abs(a - b) for a, b in pairs),
            # Information (not a check): best validation losses, to more digits than the train log's loss.
            "best_valid_loss_max_rel_diff": max(valid) if valid else None}


def start_recipes(args, sizes, device, work, logs, deadline):
    """Start every recipe run (in threads driving subprocesses); returns ``finish()``, which waits and checks.

    Each family runs on the CPU in fp32 (the reference) and on the device in each of ``--precisions``;
    linclf_train evaluates the SimCLR encoder of its own device and precision. Full run: one subprocess per
    run, several at a time. --tiny: one subprocess running every run in turn.
    """
    data_folder = synthetic.generate(os.path.join(work, "synth", "UrbanSound8K"),
                                     clips_per_class_per_fold=sizes["recipe_clips"], seed=1234)
    miniatures = (make_cochl(os.path.join(work, "CochlScene"), n_classes=13, clips_per_class=1),
                  make_tau22(os.path.join(work, "TAU22"), train_clips_per_class=2, test_clips_per_class=1))
    families = recipe_families(sizes, str(data_folder), miniatures)
    ref_cfg = (torch.device("cpu"), "fp32")
    configs = [ref_cfg] + [(device, p) for p in args.precisions if (device, p) != ref_cfg]
    recipe_work = os.path.join(work, "recipes")

    def command(family, cfg):
        extra = []
        if family == "linclf_train":
            encoder = os.path.join(recipe_work, run_name("simclr_train", *cfg), "1986", "save")
            extra = [f"--ssl_checkpoints_dir={encoder}"]
        return recipe_command(family, families[family], cfg[0], cfg[1], recipe_work, extra)

    def batch(pairs, wait_for=None):
        """A job running ``pairs`` [(family, cfg)] in one subprocess."""
        def job():
            if wait_for is not None and wait_for.result()[0].get("returncode") != 0:
                return [{"family": n, "device": str(cfg[0]), "precision": cfg[1],
                         "error": "its simclr_train run failed: no encoder checkpoints"} for n, cfg in pairs]
            runs = [command(n, cfg) for n, cfg in pairs]
            log_path = os.path.join(logs, (run_name(*pairs[0][:1], *pairs[0][1]) if len(pairs) == 1 else "recipes")
                                    + ".log")
            codes = run_recipes(runs, log_path, deadline - time.monotonic())
            return [run_record(n, cfg[0], cfg[1], *run, status, recipe_work, log_path)
                    for (n, cfg), run, status in zip(pairs, runs, codes)]
        return job

    if args.tiny:  # one process, every run in turn (the interpreter and imports paid once)
        pools = [concurrent.futures.ThreadPoolExecutor(1)]
        futures = [pools[0].submit(batch([(family, cfg) for cfg in configs for family in families]))]
    else:
        futures = []
        pools = [concurrent.futures.ThreadPoolExecutor(sizes["recipe_parallel_cpu"]),
                 concurrent.futures.ThreadPoolExecutor(sizes["recipe_parallel_device"])]
        simclr = {}
        for cfg in configs:  # linclf_train last: it waits on its SimCLR run
            for family in families:
                pool = pools[0 if cfg == ref_cfg or device.type == "cpu" else 1]
                future = pool.submit(batch([(family, cfg)], simclr.get(cfg) if family == "linclf_train" else None))
                if family == "simclr_train":
                    simclr[cfg] = future
                futures.append(future)

    def finish():
        runs = {}
        for future in futures:
            for record in future.result():
                runs.setdefault(record["family"], {})[f"{record['device']}/{record['precision']}"] = record
        for pool in pools:
            pool.shutdown()
        ref_key = f"{ref_cfg[0]}/{ref_cfg[1]}"
        checks = {}
        for family, by_cfg in runs.items():
            for key, run in by_cfg.items():
                check = {"ran": run.get("returncode") == 0, "finite": run.get("finite", False),
                         "two_tasks": run.get("finished_tasks") == 2}
                ok = check["ran"] and check["finite"] and check["two_tasks"] and "error" not in run
                if key != ref_key:
                    check.update(compare(run, by_cfg.get(ref_key, {}), args.acc_atol, args.loss_rtol))
                    ok = ok and check["comparable"]
                check["ok"] = ok
                if "error" in run:
                    check["error"] = run["error"]
                checks[f"{family} {key}"] = check
        return {"runs": runs, "checks": checks, "configs": [f"{d}/{p}" for d, p in configs],
                "reference": ref_key, "acc_atol": args.acc_atol, "loss_rtol": args.loss_rtol}

    return finish


# ---------------------------------------------------------------------------------- throughput
def section_cnn14(args, sizes, device, work, figures):
    spec = throughput.DATASETS["us8k"]
    rows, generated_s = throughput.build_corpus(None, os.path.join(work, "corpus"), spec, sizes["corpus_cells"],
                                                sizes["clip_seconds"])
    audio = throughput.AudioPipeline(spec["sample_rate"], sizes["clip_seconds"],
                                     cache_folder=os.path.join(work, "corpus_cache"))
    fill = throughput.cache_fill(rows, audio, sizes["fill_workers"])
    figures["cnn14.first_epoch_fill_s_per_1000_clips"] = figure(
        fill["seconds_per_1000_clips"], "s", note=f"decode + resample + cache of {len(rows)} clips of "
        f"{sizes['clip_seconds']:g} s (US8K layout, mixed formats), {fill['workers']} workers")
    n_batches = max(sizes["step_batches"], sizes["loader_batches"]) + 1
    host_batches = throughput.preload_batches(rows, audio, sizes["batch_size"], n_batches)
    on_device = [b.to(device) for b in host_batches]
    encoder = sizes["encoder"]
    detail = {"encoder": encoder, "clips": len(rows), "generated_s": generated_s, "cache_fill": fill,
              "batch_size": sizes["batch_size"], "clip_seconds": sizes["clip_seconds"]}
    what = f"{encoder}, batch {sizes['batch_size']} x {sizes['clip_seconds']:g} s at 16 kHz, front end on {device}"
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        with PeakMemory(device) as peak:
            modules, augmentation, opt_class = throughput.build_model(encoder, "us8k", spec["sample_rate"], work)
            modules.to(device).train()
            if isinstance(augmentation, torch.nn.Module):  # a Brain calls it from hparams on the device's features
                augmentation.to(device)
            model = (modules, augmentation, opt_class(modules.parameters()))
            step = device_step(device, precision)
            rate = throughput.time_steps(model, on_device[: sizes["step_batches"] + 1], step=step)
        rate["parameters"] = sum(p.numel() for p in modules.parameters())
        detail[f"preloaded_{precision}"] = rate
        figures[f"cnn14.train_step_{precision}_clips_per_s"] = figure(
            rate["clips_per_s"], "clips/s", note=f"{what}, {precision}, batches preloaded on the device")
        figures[f"memory.cnn14_{precision}_peak_mib"] = peak.figure(f"{encoder} training step, {precision}")
        if precision == "bf16":
            loader_args = types.SimpleNamespace(batch_size=sizes["batch_size"], epoch_batches=sizes["loader_batches"],
                                                epoch_repeats=sizes["loader_repeats"],
                                                epoch_workers=sizes["loader_workers"])
            with PeakMemory(device) as peak:
                epoch = throughput.epoch_rate(model, rows, audio, on_device[1:], loader_args, step=step)
            detail["loader_fed_bf16"] = epoch
            figures["cnn14.loader_fed_bf16_clips_per_s"] = figure(
                epoch["loader_fed_clips_per_s"], "clips/s",
                note=f"{what}, bf16, fed by the real cached loader ({sizes['loader_workers']} workers), median of "
                     f"{sizes['loader_repeats']} rounds of {epoch['batches_per_repeat']} batches")
            figures["cnn14.loader_fed_over_preloaded_step_time"] = figure(
                epoch["step_time_with_loader_over_preloaded"], "ratio", "<= 1.2",
                "step time fed by the loader / on preloaded batches, same rounds")
            figures["cnn14.loader_wait_fraction"] = figure(epoch["loader_wait_fraction"], "fraction",
                                                           note="time the step loop waited for a batch")
            figures["memory.cnn14_bf16_loader_peak_mib"] = peak.figure(f"{encoder} bf16 step fed by the loader")
        del model, modules
    fp32, bf16 = detail["preloaded_fp32"]["clips_per_s"], detail["preloaded_bf16"]["clips_per_s"]
    figures["cnn14.bf16_speedup_over_fp32"] = figure(bf16 / fp32, "x", note="preloaded step clips/s, bf16 / fp32")
    # The moonshot: extrapolated, not measured.
    fed = detail["loader_fed_bf16"]["loader_fed_clips_per_s"]
    epoch_s = US8K_EPOCH_CLIPS / fed
    scope = ("" if encoder == "cnn14" and sizes["clip_seconds"] == 4.0 else
             f" (--tiny: {encoder} on {sizes['clip_seconds']:g} s clips, NOT the moonshot configuration)")
    figures["cnn14.us8k_epoch_s_extrapolated"] = figure(
        epoch_s, "s", f"~{MOONSHOT_GOAL_S:g}", f"EXTRAPOLATED: {US8K_EPOCH_CLIPS} clips / the measured loader-fed "
        f"bf16 steady rate {fed:.1f} clips/s (cache warm){scope}")
    figures["cnn14.us8k_first_epoch_s_extrapolated"] = figure(
        epoch_s + US8K_CLIPS * fill["seconds_per_1000_clips"] / 1000, "s",
        note=f"EXTRAPOLATED: the epoch above + the cache fill of all {US8K_CLIPS} clips at the measured "
             f"rate{scope}")
    figures["cnn14.us8k_epoch_tflop_per_s"] = figure(
        US8K_EPOCH_TFLOP / epoch_s, "TFLOP/s", note=f"the issue's ~{US8K_EPOCH_TFLOP:g} TFLOP per CNN14 epoch / "
        f"the extrapolated epoch time (~70 TFLOP/s = the 5 s goal){scope}")
    return detail


def section_passt(args, sizes, device, work, figures):
    torch.manual_seed(0)
    sample_rate, seconds, batch = 32000, sizes["passt_seconds"], sizes["passt_batch"]
    patch_t, patch_f = sizes["passt_patchout"]
    with PeakMemory(device) as peak:
        embedding = passt.PaSST(s_patchout_t=patch_t, s_patchout_f=patch_f, **sizes["passt"])
        modules = torch.nn.ModuleDict({"compute_features": passt.PaSSTFrontEnd(sample_rate),
                                       "mean_var_norm": passt.FixedNormalization(), "embedding_model": embedding,
                                       "classifier": passt.PaSSTClassifier(embedding.emb_dim, 10)}).to(device).train()
        model = (modules, None, torch.optim.Adam(modules.parameters(), lr=1e-5))
        n = int(seconds * sample_rate)
        generator = torch.Generator().manual_seed(0)
        batches = [types.SimpleNamespace(  # preloaded on the device, as batch_tensors reads a loader batch
            id=list(range(batch)), sig=((0.1 * torch.randn(batch, n, generator=generator)).to(device),
                                        torch.ones(batch, device=device)),
            class_idx=torch.randint(10, (batch,), generator=generator).to(device))
            for _ in range(sizes["passt_steps"] + 1)]
        rate = throughput.time_steps(model, batches, step=device_step(device, "bf16"))
    rate["parameters"] = sum(p.numel() for p in modules.parameters())
    size = ("(" + ", ".join(f"{k}={v}" for k, v in sizes["passt"].items()) + ")" if sizes["passt"]
            else embedding.arch)
    config = (f"PaSST {size} {rate['parameters'] / 1e6:.2f} M parameters, random weights, "
              f"patchout {patch_t} x {patch_f}, "
              f"batch {batch} x {seconds:g} s at 32 kHz, bf16, front end on {device}")
    figures["passt.train_step_bf16_clips_per_s"] = figure(rate["clips_per_s"], "clips/s", note=config)
    figures["memory.passt_bf16_peak_mib"] = peak.figure(config)
    return dict(rate, config=config)


def section_noisytune(args, sizes, device, work, figures):
    memory_update = load_bench("memory_update")
    with PeakMemory(device) as peak:
        summary = memory_update.main([*sizes["noisytune"], f"--device={device}", "--policies=uncertainty_noisytune",
                                      "--scaling=", f"--out={os.path.join(work, 'memory_update.json')}"])
    ratio = summary["ratios"]["noisytune/plain_forward"]
    a = summary["args"]
    what = (f"{a['n_candidates']} candidates of {a['duration']:g} s, BC-ResNet-{a['c']:g}, k={a['metric_k']}, "
            f"median of {a['repeats']}, on {device}")
    figures["noisytune.over_plain_forward"] = figure(ratio, "ratio", "<= 1.3", f"noisytune memory update / one "
                                                     f"plain forward pass: {what}")
    figures["memory.noisytune_peak_mib"] = peak.figure(f"noisytune memory update, {what}")
    return {"seconds": summary["seconds"], "ratios": summary["ratios"], "ratio_ranges": summary["ratio_ranges"],
            "args": {k: a[k] for k in ("n_candidates", "duration", "c", "metric_k", "repeats", "batch_size")}}


def section_linear_eval(args, sizes, device, work, figures):
    base = os.path.join(work, "linear_eval")
    data_folder = synthetic.generate(os.path.join(base, "synth", "UrbanSound8K"), clips_per_class_per_fold=2, seed=1234)
    extra = [f"--device={device}", f"--data_folder={data_folder}", f"--audio_cache={base}/audio_cache",
             "--clips_per_class_per_fold=2", *sizes["linear_eval_extra"]]
    argv = [sys.executable, os.path.join(REPO_ROOT, "bench", "linear_eval.py"), f"--output_base={base}",
            *sizes["linear_eval"]]
    if args.tiny:  # the recipes' tiny encoder, 2 tasks
        extra += ["--task_classes=[[0,1],[2,3]]", *sizes["recipe_encoder"], "--batch_size=16"]
    argv.append("--extra=" + " ".join(extra))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([MODULES, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    log_path = os.path.join(args.out, "logs", "linear_eval.log")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            raise RuntimeError(f"bench/linear_eval.py exited {proc.returncode}: {f.read()[-600:]}")
    with open(os.path.join(base, "linear_eval_bench.json"), encoding="utf-8") as f:
        summary = json.load(f)
    measured, extrapolated = summary["measured"], summary.get("extrapolated", summary["measured"])
    what = (f"encoder {summary['encoder']}, {summary['n_tasks']} tasks, {measured['epochs']} epochs measured, on "
            f"{device}; matrices {'identical' if summary['identical'] else 'DIFFER'}")
    figures["linear_eval.reencoding_over_cached"] = figure(
        extrapolated["ratio"], "ratio", ">= 10", f"re-encoding every epoch / cached embeddings, "
        f"{extrapolated['epochs']} epochs per task (extrapolated from the measured epochs when fewer), {what}")
    figures["linear_eval.reencoding_over_cached_measured"] = figure(measured["ratio"], "ratio", note=what)
    del summary["measured"]["per_task"]
    return dict(summary, identical_matrices=summary["identical"], log=os.path.relpath(log_path, args.out))


# ---------------------------------------------------------------------------------- report
def failures(report):
    """Every reason the run fails: failed checks, and figures missing or not finite."""
    bad = []
    for name, section in report["sections"].items():
        if "error" in section:
            bad.append(f"section {name}: {section['error'].splitlines()[-1]}")
    for name, check in report.get("recipes", {}).get("checks", {}).items():
        if not check["ok"]:
            bad.append(f"recipe {name}: " + ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok"))
    for key, fig in report["figures"].items():
        if fig.get("not_applicable"):
            continue
        if not finite(fig["value"]):
            bad.append(f"figure {key}: {fig['note'] or 'not finite'}")
    if "linear_eval" in report and not report["linear_eval"].get("identical_matrices", True):
        bad.append("linear_eval: cached and re-encoding accuracy matrices differ")
    return bad


def goal_met(value, goal):
    """Whether ``value`` meets ``goal`` ("<= x" / ">= x"; None for "~x", no goal or no value)."""
    if not goal or not finite(value):
        return None
    match = re.fullmatch(r"\s*(<=|>=)\s*([0-9.eE+-]+)\s*", goal)
    if not match:
        return None
    return value <= float(match.group(2)) if match.group(1) == "<=" else value >= float(match.group(2))


def _fmt(value):
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def write_table(report, path):
    m = report["machine"]
    lines = [f"# GPU bench ({'--tiny, ' if report['args']['tiny'] else ''}{m['device']}: {m['device_name']})", "",
             f"{m['date']}, commit {m['commit']}, torch {m['torch']} (CUDA build {m['torch_cuda_build']}), "
             f"SpeechBrain {m['speechbrain']}, {m['cpus']} CPUs, wall {report['wall_s']:.0f} s "
             f"(budget {report['args']['budget_s']:g} s). "
             f"Result: **{'PASS' if not report['failures'] else 'FAIL'}**.", "",
             "| figure | value | unit | goal | met | note |", "|---|---|---|---|---|---|"]
    for key, fig in report["figures"].items():
        met = {True: "yes", False: "no", None: ""}[fig.get("met")]
        lines.append(f"| {key} | {_fmt(fig['value'])} | {fig['unit']} | {fig['goal'] or ''} | {met} | {fig['note']} |")
    recipes = report.get("recipes")
    if recipes and "runs" in recipes:
        lines += ["", f"Recipes: 2 tasks each; reference {recipes['reference']}; comparable = A_last within "
                      f"{recipes['acc_atol']:g} and first training loss within {recipes['loss_rtol']:.0%}.", "",
                  "| family | run | A_last | first train loss | wall s | finite | vs reference | ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for family, by_cfg in recipes["runs"].items():
            for key, run in by_cfg.items():
                check = recipes["checks"][f"{family} {key}"]
                versus = "(reference)" if key == recipes["reference"] else (
                    f"dA {_fmt(check.get('A_last_abs_diff'))}, dloss {_fmt(check.get('first_train_loss_rel_diff'))}")
                lines.append(f"| {family} | {key} | {_fmt(run.get('A_last'))} | {_fmt(run.get('first_train_loss'))} | "
                             f"{_fmt(run.get('wall_s'))} | {check['finite']} | {versus} | {check['ok']} |")
    lines += ["", "| section | wall s | status |", "|---|---|---|"]
    for name, section in report["sections"].items():
        lines.append(f"| {name} | {_fmt(section.get('wall_s'))} | "
                     f"{section.get('error', 'ok').splitlines()[-1][:200].replace('|', '/')} |")
    if report["failures"]:
        lines += ["", "Failures:", ""] + [f"- {reason[:400]}" for reason in report["failures"]]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="CI sizes (CPU, < 1 min on 2 cores)")
    parser.add_argument("--out", default="gpu_bench", help="folder of gpu.json, gpu.md and logs/")
    parser.add_argument("--budget_s", type=float, default=450.0,
                        help="sections that would end past it are not started (their figures: missing)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--precisions", default=None,
                        help="precisions of the recipe runs on --device (default: fp32,bf16 on CUDA; bf16 on CPU)")
    parser.add_argument("--acc_atol", type=float, default=0.3, help="A_last tolerance against the CPU run")
    parser.add_argument("--loss_rtol", type=float, default=0.25, help="first-loss tolerance against the CPU run")
    parser.add_argument("--work_dir", default=None, help="runs and corpora (default: a temporary folder, removed)")
    parser.add_argument("--recipe_batch", default=None, help=argparse.SUPPRESS)  # child of run_recipes
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device={args.device}: CUDA is not available here (torch {torch.__version__}); "
                     f"--device=cpu --tiny runs the CPU mode")
    if args.precisions is None:
        args.precisions = "fp32,bf16" if device.type == "cuda" else "bf16"
    args.precisions = [p for p in args.precisions.split(",") if p]
    bad = sorted(set(args.precisions) - {"fp32", "fp16", "bf16"})
    if bad:
        parser.error(f"unknown precisions {bad}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.recipe_batch:
        return recipe_batch(args.recipe_batch)
    device = torch.device(args.device)
    sizes = SIZES["tiny" if args.tiny else "full"]
    args.out = os.path.abspath(args.out)
    logs = os.path.join(args.out, "logs")
    os.makedirs(logs, exist_ok=True)
    own_work = args.work_dir is None
    work = tempfile.mkdtemp(prefix="soundcl_gpu_") if own_work else os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    deadline = start + args.budget_s
    report = {"args": {k: v for k, v in vars(args).items()}, "machine": machine_info(device), "sizes": sizes,
              "figures": {}, "sections": {}}
    figures = {}
    print(f"GPU bench on {device} ({report['machine']['device_name']}), sections {', '.join(args.only)}, "
          f"budget {args.budget_s:g} s", flush=True)
    finish_recipes = None
    try:
        for name in SECTIONS:
            if name not in args.only:
                continue
            left = deadline - time.monotonic()
            if left < sizes["estimate_s"][name]:
                report["sections"][name] = {"error": f"not started: {left:.0f} s of the budget left, the section "
                                                     f"takes ~{sizes['estimate_s'][name]} s (--budget_s)"}
                print(f"[{name}] skipped: budget", flush=True)
                continue
            t0 = time.monotonic()
            print(f"[{name}] ...", flush=True)
            try:
                if name == "recipes":
                    finish_recipes = start_recipes(args, sizes, device, work, logs, deadline)
                    recipes_t0 = t0
                    if args.tiny:  # CI: the recipe subprocesses run beside the other sections
                        print("[recipes] started; running beside the other sections (--tiny)", flush=True)
                        continue
                    result, finish_recipes = finish_recipes(), None
                else:
                    result = globals()[f"section_{name}"](args, sizes, device, work, figures)
                report[name] = result
                report["sections"][name] = {"wall_s": time.monotonic() - t0}
            except Exception:  # noqa: BLE001 - every section reports; the exit status says a section failed
                finish_recipes = None
                report["sections"][name] = {"wall_s": time.monotonic() - t0, "error": traceback.format_exc()}
                print(f"[{name}] FAILED:\n{traceback.format_exc()}", flush=True)
            print(f"[{name}] {time.monotonic() - t0:.1f} s", flush=True)
        if finish_recipes is not None:
            try:
                report["recipes"] = finish_recipes()
                report["sections"]["recipes"] = {"wall_s": time.monotonic() - recipes_t0}
            except Exception:  # noqa: BLE001
                report["sections"]["recipes"] = {"wall_s": time.monotonic() - recipes_t0,
                                                 "error": traceback.format_exc()}
            print(f"[recipes] done, {time.monotonic() - recipes_t0:.1f} s after their start", flush=True)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    # Every figure of the sections run: a value, a reason it cannot exist here, or missing (a failure).
    for key, (unit, goal) in FIGURES.items():
        if _section_of(key) not in args.only:
            continue
        fig = figures.get(key)
        if fig is None:
            section = report["sections"].get(_section_of(key), {})
            reason = section.get("error", "not produced").strip().splitlines()[-1]
            fig = missing(unit, f"missing: section {_section_of(key)}: {reason}")
        fig["goal"] = fig.get("goal") or goal
        fig["met"] = goal_met(fig["value"], fig["goal"])
        report["figures"][key] = fig
    report["wall_s"] = time.monotonic() - start
    report["failures"] = failures(report)
    with open(os.path.join(args.out, "gpu.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
    write_table(report, os.path.join(args.out, "gpu.md"))
    with open(os.path.join(args.out, "gpu.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"{'FAIL' if report['failures'] else 'PASS'}: {len(report['failures'])} failure(s); wall "
          f"{report['wall_s']:.1f} s; {os.path.join(args.out, 'gpu.json')}", flush=True)
    return report


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 1 if result["failures"] else 0)
