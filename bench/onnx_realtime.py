#!/usr/bin/env python3
"""Real-time factor of the shipped waveform-to-label ONNX models on one CPU thread.

    PYTHONPATH=modules python bench/onnx_realtime.py --dsmn_run=<dsmn qat run> --bcresnet_run=<replay run> \
        --out=onnx_realtime.json

For each model (``waveform_int8.onnx`` of a DSMN run, ``waveform.onnx`` of a BC-ResNet
``replay_train`` run; exported with ``recipes/export.py`` first when absent) and clip length
(1 s, 10 s): onnxruntime with ``intra_op_num_threads=1`` (and one inter-op thread) scores one clip
at a time, batch 1, a random waveform at the run's sample rate, after ``--warmup`` runs, for at
least ``--seconds`` of wall time; figures: clips per second and real-time factor (audio seconds
scored per wall second), the median of ``--repeats`` rounds. The whole artefact is timed: peak
normalisation, log-mel front end, network, softmax. ``model_int8.onnx`` (filterbanks in, the
network alone) is timed beside it for the DSMN. Goal: >= 1000x real time for the int8 DSMN.
The machine's load (``os.getloadavg``) is recorded before and after.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))


def time_session(session, feeds, seconds, warmup, repeats):
    """Medians over ``repeats`` rounds of runs per wall second and per CPU second of this process
    (on a shared machine the CPU-second figure is what one core of its own would give), and the rounds."""
    for _ in range(warmup):
        session.run(None, feeds)
    rates, cpu_rates = [], []
    for _ in range(repeats):
        n, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            session.run(None, feeds)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(n / elapsed)
        cpu_rates.append(n / max(time.process_time() - cpu_start, 1e-9))
    return statistics.median(rates), statistics.median(cpu_rates), rates


def ensure_export(run, name, fmt):
    path = os.path.join(run, name)
    if not os.path.isfile(path):
        import export

        export.main([run, f"--format={fmt}"])
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsmn_run", required=True, help="a dsmn_train run folder (--qat=True for the QAT model)")
    parser.add_argument("--bcresnet_run", required=True, help="a replay_train run folder (BC-ResNet)")
    parser.add_argument("--durations", default="1,10", help="clip lengths in seconds")
    parser.add_argument("--seconds", type=float, default=3.0, help="least wall time of one round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", default="onnx_realtime.json")
    args = parser.parse_args(argv)

    from soundcl.ondevice.waveform import INPUT, onnx_metadata, onnx_session

    models = [
        ("DSMN int8 (QDQ), waveform in", ensure_export(args.dsmn_run, "waveform_int8.onnx", "onnx_int8"), "wave"),
        ("DSMN int8 (QDQ), filterbanks in (network alone)", os.path.join(args.dsmn_run, "model_int8.onnx"), "feats"),
        ("BC-ResNet float32, waveform in", ensure_export(args.bcresnet_run, "waveform.onnx", "onnx"), "wave"),
    ]
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    rows = []
    for label, path, kind in models:
        meta = onnx_metadata(path if kind == "wave" else models[0][1])
        sample_rate = int(meta["sample_rate"])
        front = json.loads(meta["front_end"])
        session = onnx_session(path, threads=1)
        for seconds in [float(d) for d in args.durations.split(",")]:
            samples = int(round(seconds * sample_rate))
            if kind == "wave":
                feeds = {INPUT: (0.1 * rng.standard_normal((1, samples))).astype(np.float32)}
            else:
                frames = 1 + samples // int(front["hop_length"])
                feeds = {"feats": rng.standard_normal((1, frames, int(front["n_mels"]))).astype(np.float32)}
            rate, cpu_rate, rates = time_session(session, feeds, args.seconds, args.warmup, args.repeats)
            rows.append({"model": label, "onnx": os.path.abspath(path), "file_bytes": os.path.getsize(path),
                         "clip_seconds": seconds, "sample_rate": sample_rate, "clips_per_second": rate,
                         "realtime_factor": rate * seconds, "ms_per_clip": 1e3 / rate,
                         "clips_per_cpu_second": cpu_rate, "realtime_factor_per_cpu_second": cpu_rate * seconds,
                         "rounds_clips_per_second": rates})
            print(f"{label:50s} {seconds:5.1f} s clips: {rate:9.1f} clips/s, {rate * seconds:9.0f}x real time "
                  f"({1e3 / rate:.3f} ms per clip); per CPU second {cpu_rate * seconds:9.0f}x", flush=True)
    import onnxruntime

    summary = {
        "rows": rows,
        "goal": "DSMN int8, waveform in, 1 s clips: realtime_factor >= 1000 on one thread",
        "goal_met": any(r["model"].startswith("DSMN int8 (QDQ), waveform") and r["clip_seconds"] == 1.0
                        and r["realtime_factor"] >= 1000 for r in rows),
        "goal_met_per_cpu_second": any(r["model"].startswith("DSMN int8 (QDQ), waveform") and r["clip_seconds"] == 1.0
                                       and r["realtime_factor_per_cpu_second"] >= 1000 for r in rows),
        "threads": {"intra_op": 1, "inter_op": 1},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "command": " ".join(sys.argv),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"goal met: {summary['goal_met']} (per CPU second: {summary['goal_met_per_cpu_second']}); load {load_before} -> {summary['load_average_after']}; {args.out}")
    return summary


if __name__ == "__main__":
    main()
