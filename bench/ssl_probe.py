#!/usr/bin/env python3
"""What the linear probe of the sanity bench sees: feature statistics and probes on cached embeddings.

Reads the embeddings a ``linear/<x>`` run of ``bench/sanity.py`` cached for its last task
(``<run>/save/task4/embeddings.pt``: every training, validation and test clip, encoded by the
frozen task-4 encoder exactly as the probe saw them) and reports, per run:

- scale: mean L2 norm, mean per-dimension std, the ratio of the largest to the smallest
  per-dimension std, the effective dimension (participation ratio of the covariance spectrum);
- the bench's probe re-run in plain PyTorch (linear layer, SGD momentum 0.9, cosine, batch 16)
  on the raw and on the standardised embeddings (training-fold mean and std), for a few
  learning rates and epochs: test accuracy on fold 10 over all 10 classes (what A_last averages);
- a scikit-learn logistic regression on the standardised embeddings (the probe run to convergence);
- with ``--attributes``: the same logistic regression for the recording attributes both views of a
  clip share (voice, voice variant, noise type, sample rate, speed, pitch: ``clips.json``);
- with ``--views CORPUS``: the spoken word's duration and how much of it a 1.5 s training crop keeps;
- with ``--precise_bn``: the same on embeddings re-encoded after re-estimating the encoder's
  BatchNorm statistics on the full training clips (is the probe hurt by stale running statistics?).

    PYTHONPATH=modules python bench/ssl_probe.py /tmp/sanity/runs/linear_simclr /tmp/sanity/runs/linear_random
"""
import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import torch


def load(run):
    """(ids, embeddings [n, d] float64 numpy, class [n], fold [n]) of a linear run's task-4 cache."""
    found = sorted(glob.glob(os.path.join(run, "run", "*", "save", "task4", "embeddings.pt")))
    if not found:
        raise SystemExit(f"no save/task4/embeddings.pt under {run}/run/*/")
    cache = torch.load(found[0], map_location="cpu", weights_only=True)
    ids = list(cache["ids"])
    # UrbanSound8K names: <fsID>-<classID>-<fold>-<n>.wav
    classes = np.array([int(i.split("-")[1]) for i in ids])
    folds = np.array([int(i.split("-")[2]) for i in ids])
    return ids, cache["embeddings"].double().numpy(), classes, folds


def statistics(x):
    """Scale and dimension of embeddings x [n, d]."""
    std = x.std(axis=0)
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    return {"norm": float(np.linalg.norm(x, axis=1).mean()), "dim": int(x.shape[1]),
            "std_mean": float(std.mean()), "std_max_over_min": float(std.max() / max(std.min(), 1e-12)),
            "effective_dim": float(eig.sum() ** 2 / max((eig ** 2).sum(), 1e-24)),
            "dead_dims": int((std < 1e-6).sum())}


def sgd_probe(xtr, ytr, xte, yte, lr, epochs, batch=16, seed=0):
    """The bench's probe: Linear, SGD momentum 0.9, cosine to 0 per batch, batch 16, shuffled; test accuracy."""
    torch.manual_seed(seed)
    xtr, xte = torch.as_tensor(xtr, dtype=torch.float32), torch.as_tensor(xte, dtype=torch.float32)
    ytr, yte = torch.as_tensor(ytr), torch.as_tensor(yte)
    layer = torch.nn.Linear(xtr.shape[1], 10)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9)
    steps = epochs * math.ceil(len(ytr) / batch)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(ytr))
        for start in range(0, len(ytr), batch):
            index = order[start:start + batch]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = torch.nn.functional.cross_entropy(layer(xtr[index]), ytr[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        train_loss = float(torch.nn.functional.cross_entropy(layer(xtr), ytr))
        return float((layer(xte).argmax(1) == yte).float().mean()), train_loss


def encode_with_precise_bn(run, batch=16):
    """Embeddings of every clip by the run's task-4 encoder after re-estimating its BatchNorm statistics.

    The statistics are re-estimated (cumulative average, ``torch.optim.swa_utils.update_bn``) on the
    full training clips (folds 1-8, no augmentation, batches of 16 clips of similar length cut to the
    shortest), then every clip is embedded alone in eval mode, as the probe does.
    Returns (ids, embeddings [n, d] float64 numpy, class [n], fold [n], max |cached - recomputed| with
    the original statistics: 0 up to rounding when this re-encoding is the probe's).
    """
    from hyperpyyaml import load_hyperpyyaml
    from torch.optim.swa_utils import update_bn

    from soundcl.methods.evaluation.encoder_checkpoints import load_encoder

    yaml_path = sorted(glob.glob(os.path.join(run, "run", "*", "hyperparams.yaml")))[0]
    with open(yaml_path) as f:
        hp = load_hyperpyyaml(f)
    front, norm, encoder = hp["compute_features"], hp["mean_var_norm"], hp["embedding_model"]
    load_encoder(hp["ssl_checkpoints_dir"], 4, {"embedding_model": encoder, "normalizer": norm})
    norm.eval()
    ids, x_cached, classes, folds = load(run)
    corpus = hp["data_folder"]
    wavs = [hp["audio"].load(os.path.join(corpus, "audio", f"fold{f}", f"{i}.wav")) for i, f in zip(ids, folds)]

    @torch.no_grad()
    def embed_all():
        encoder.eval()
        out = []
        for wav in wavs:
            feats = norm(front(wav[None]), torch.ones(1))
            out.append(encoder(feats, torch.ones(1)).double())
        return torch.cat(out).numpy()

    before = embed_all()
    train = [w for w, f in zip(wavs, folds) if f <= 8]
    train.sort(key=len)

    def batches():
        for start in range(0, len(train), batch):
            group = train[start:start + batch]
            n = min(len(w) for w in group)
            wav = torch.stack([w[:n] for w in group])
            yield norm(front(wav), torch.ones(len(group)))

    with torch.no_grad():
        encoder.train()
        update_bn(batches(), encoder)
    return ids, embed_all(), classes, folds, float(np.abs(before - x_cached).max())


def probe_run(run, lrs, epochs_list, precise_bn=False):
    from sklearn.linear_model import LogisticRegression

    if precise_bn:
        _, x, y, fold, check = encode_with_precise_bn(run)
    else:
        _, x, y, fold = load(run)
    train, test = fold <= 8, fold == 10
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    z = (x - mean) / std
    report = {"run": run, "precise_bn": precise_bn, "n_train": int(train.sum()), "n_test": int(test.sum()),
              "stats": statistics(x[train])}
    if precise_bn:
        report["max_abs_cached_minus_reencoded"] = check
    for name, feats in (("raw", x), ("standardised", z)):
        for lr in lrs:
            for epochs in epochs_list:
                acc, loss = sgd_probe(feats[train], y[train], feats[test], y[test], lr, epochs)
                report[f"sgd_{name}_lr{lr}_ep{epochs}"] = {"test_acc": acc, "train_loss": loss}
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(z[train], y[train])
    report["logreg_standardised"] = float(clf.score(z[test], y[test]))
    return report


#: Recording attributes of the corpus (bench/sanity.py clips.json) that are not the class but that both
#: views of a clip share: what a contrastive objective can match views by instead of the word.
ATTRIBUTES = {"voice": lambda c: c["voice"].split("+")[0], "variant": lambda c: c["voice"].split("+")[1],
              "noise": lambda c: c["noise"] or "none", "rate": lambda c: c["rate"],
              "speed": lambda c: c["speed"] >= 165, "pitch": lambda c: c["pitch"] >= 50}


def attribute_probes(run):
    """Standardised logistic regression (folds 1-8 -> fold 10) of each of ``ATTRIBUTES`` and the word."""
    from sklearn.linear_model import LogisticRegression

    ids, x, y, fold = load(run)
    yaml_path = sorted(glob.glob(os.path.join(run, "run", "*", "hyperparams.yaml")))[0]
    corpus = next(line.split(":", 1)[1].strip() for line in open(yaml_path) if line.startswith("data_folder:"))
    with open(os.path.join(corpus, "clips.json")) as f:
        clips = {os.path.splitext(c["slice_file_name"])[0]: c for c in json.load(f)}
    train, test = fold <= 8, fold == 10
    z = (x - x[train].mean(0)) / (x[train].std(0) + 1e-8)
    out = {}
    for name, get in {"word": lambda c: c["classID"], **ATTRIBUTES}.items():
        labels = np.array([str(get(clips[i])) for i in ids])
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(z[train], labels[train])
        values, counts = np.unique(labels[train], return_counts=True)
        majority = float((labels[test] == values[counts.argmax()]).mean())
        out[name] = {"acc": float(clf.score(z[test], labels[test])), "majority": majority}
    return out


def word_coverage(corpus, crop_s=1.5, n_offsets=32):
    """How much of the spoken word a random ``crop_s`` training crop keeps, over the corpus's clips.

    The word's extent is measured on espeak-ng's own output for the clip (re-spoken from
    ``clips.json``: frames within 30 dB of its peak), shifted by the clip's leading silence; the crop
    offsets are uniform as :meth:`soundcl.data.audio.AudioPipeline.crop_offset` draws them (a clip
    shorter than the crop stays whole). Returns word durations, the coverage distribution and how
    much two views' crops overlap (the fraction of clips whose two views are the same waveform).
    """
    import subprocess
    import tempfile

    import soundfile

    with open(os.path.join(corpus, "clips.json")) as f:
        clips = json.load(f)
    words, durations, coverage, overlap = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.wav")
        for c in clips:
            subprocess.run(["espeak-ng", "-v", c["voice"], "-s", str(c["speed"]), "-p", str(c["pitch"]), "-w", path,
                            c["class"]], check=True, capture_output=True)
            wav, rate = soundfile.read(path)
            frame = rate // 100
            energy = np.array([np.sum(wav[i:i + frame] ** 2) for i in range(0, len(wav) - frame, frame)])
            active = np.nonzero(energy > energy.max() * 1e-3)[0]
            onset, offset = c["lead_s"] + active[0] / 100, c["lead_s"] + (active[-1] + 1) / 100
            duration = max(c["target_s"], c["lead_s"] + len(wav) / rate + 0.05)
            words.append(offset - onset)
            durations.append(duration)
            if duration <= crop_s:
                coverage.append(1.0)
                overlap.append(1.0)  # both views are the whole clip: the same waveform
                continue
            starts = np.linspace(0, duration - crop_s, n_offsets)
            overlap.append(float(np.mean(1.0 - np.abs(starts[:, None] - starts[None, :]) / crop_s)))
            kept = np.clip(np.minimum(offset, starts + crop_s) - np.maximum(onset, starts), 0, None) / (offset - onset)
            coverage.append(float(kept.mean()))
    words, coverage = np.array(words), np.array(coverage)
    return {"word_s_mean": float(words.mean()), "word_s_p10_p90": [float(np.percentile(words, q)) for q in (10, 90)],
            "clip_s_mean": float(np.mean(durations)), "crop_s": crop_s,
            "coverage_mean": float(coverage.mean()), "clips_coverage_below_0.5": float((coverage < 0.5).mean()),
            "clips_coverage_below_0.9": float((coverage < 0.9).mean()),
            "clips_views_identical": float(np.mean(np.array(durations) <= crop_s)),
            "view_overlap_mean": float(np.mean(overlap))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders of linear/<x> (<out>/runs/linear_<x>)")
    parser.add_argument("--views", default=None, metavar="CORPUS",
                        help="report how much of the word a training crop keeps on this corpus folder")
    parser.add_argument("--crops", default="1.5", type=lambda v: [float(c) for c in v.split(",")],
                        help="crop lengths (s) of --views")
    parser.add_argument("--lrs", default="0.05,0.01,0.2", help="probe learning rates")
    parser.add_argument("--epochs", default="15,60", help="probe epochs")
    parser.add_argument("--json", default=None, help="write the reports here")
    parser.add_argument("--attributes", action="store_true",
                        help="also probe the recording attributes both views share (voice, noise, rate...)")
    parser.add_argument("--precise_bn", action="store_true",
                        help="re-encode every clip after re-estimating the encoder's BatchNorm statistics on the "
                             "full training clips (instead of the cached embeddings)")
    args = parser.parse_args(argv)
    lrs = [float(v) for v in args.lrs.split(",")]
    epochs = [int(v) for v in args.epochs.split(",")]
    torch.set_num_threads(1)
    if args.views:
        for crop in args.crops:
            print("word coverage of a training crop:", json.dumps(word_coverage(args.views, crop)))
    reports = [probe_run(run, lrs, epochs, args.precise_bn) for run in args.runs]
    if args.attributes:
        for r in reports:
            r["attributes"] = attribute_probes(r["run"])
            print(os.path.basename(r["run"].rstrip("/")), "attributes (test acc / majority): " + ", ".join(
                f"{k} {100 * v['acc']:.1f}/{100 * v['majority']:.1f}" for k, v in r["attributes"].items()))
    for r in reports:
        s = r["stats"]
        print(f"{os.path.basename(r['run'].rstrip('/'))}{' (precise BN)' if r['precise_bn'] else ''}: norm {s['norm']:.3g}, per-dim std {s['std_mean']:.3g} "
              f"(max/min {s['std_max_over_min']:.3g}), effective dim {s['effective_dim']:.1f} of {s['dim']}, "
              f"dead {s['dead_dims']}; logreg (standardised) {100 * r['logreg_standardised']:.1f} %")
        for key, value in r.items():
            if key.startswith("sgd_"):
                print(f"    {key:<32} test {100 * value['test_acc']:5.1f} %  train loss {value['train_loss']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    return reports


if __name__ == "__main__":
    main()
