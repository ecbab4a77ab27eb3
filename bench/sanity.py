#!/usr/bin/env python3
"""Science sanity on real sound: a spoken-word corpus in the UrbanSound8K layout, the recipes, the expected orderings.

No real corpus can be downloaded here, so this bench makes one from signals no one on this
project wrote: ``espeak-ng`` speaks 10 words (the 10 classes) with many voices, speeds and
pitches, and ``sox`` pads them, mixes in background noise for some clips and writes them at
mixed sample rates, channel counts and bit depths, in the UrbanSound8K layout
(``metadata/UrbanSound8K.csv``, ``audio/fold1..10/``). Each fold has its own speakers (a
speaker = voice + variant, like UrbanSound8K's Freesound recordings that stay in one fold),
so the test fold is spoken by voices never heard in training. The corpus is built once into
``<out>/corpus`` (``--quick``: everything under ``<out>/quick/``) and reused.

Then the ``hparams/us8k/`` recipes run in-process, one after the other, with settings small
enough for 2 CPU cores (see ``SETTINGS``: a 3-block CNN14-style CNN instead of the YAMLs'
CNN14 / ECAPA-TDNN, Adam 1e-3 instead of the YAMLs' SGD schedule sized for 50 epochs, SpecAugment
scaled to 40 bands, Kim et al.'s BC-ResNet-2 on 32 mel bands instead of the replay recipe's
ASC-CL BCResNet_Mod, BatchNorm statistics re-estimated before each validation), and the
orderings the literature expects are checked:

- joint training well above chance (A_last >= ``JOINT_MIN``);
- fine-tuning forgets (BWT <= ``FINETUNE_MAX_BWT``);
- replay, each ``sup_train --strategy=`` and each memory policy of the replay recipe land
  between fine-tuning and joint of the same recipe in A_last (the replay recipe's joint is
  its model trained on one task holding all 10 classes);
- SimCLR / SimSiam encoders under linear evaluation ``seen`` beat a randomly initialised
  encoder of the same architecture (the SimCLR recipe with learning rate 0: weights stay at
  their initialisation, only the normalisation statistics are estimated) and forget less
  than the supervised fine-tuned encoder under the same evaluation (reported either way);
- the uncertainty memory vs the random memory (reported either way).

    apt-get install espeak-ng sox
    PYTHONPATH=modules python bench/sanity.py --out /tmp/sanity            # full (< 1 h on 2 cores)
    PYTHONPATH=modules python bench/sanity.py --out /tmp/sanity --quick    # a smoke check, minutes

Prints one table (method, A_last, A_avg, BWT, forgetting, wall time) and which orderings held;
writes ``<out>/sanity.json`` (``<out>/quick/sanity_quick.json``). Rerunning resumes: finished runs
are read back from their results.json.
"""
import argparse
import csv
import glob
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "modules"))

# ---------------------------------------------------------------- corpus
#: The 10 classes (classID = index): words of the Speech Commands vocabulary, some of them
#: easy to confuse ("no" / "go", "on" / "off").
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
#: espeak-ng's own (formant) English voices, and voice variants (speaker characteristics).
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4"]
#: Output formats drawn per clip: rates (Hz), channel counts, (bits, encoding).
RATES = [8000, 16000, 22050, 44100, 48000]
CHANNELS = [1, 2]
ENCODINGS = [(16, "signed-integer"), (24, "signed-integer"), (8, "unsigned-integer"), (32, "floating-point")]
NOISES = ["whitenoise", "pinknoise", "brownnoise"]
NOISY_FRACTION = 0.5
N_FOLDS = 10
CORPUS_VERSION = 2  # 2: reproducible (noise seeded per clip, sox -R)
MARKER = "sanity_corpus.json"
REQUIRED_TOOLS = ("espeak-ng", "sox")


def missing_tools():
    """The tools of ``REQUIRED_TOOLS`` not on the PATH."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def speakers_of_fold(fold):
    """The (voice, variant) speakers of ``fold`` (1..10): every speaker belongs to one fold."""
    speakers = [(v, s) for v in VOICES for s in VARIANTS]
    random.Random(0).shuffle(speakers)
    return speakers[fold - 1::N_FOLDS]


def clip_plan(clips_per_class_per_fold, seed=0, words=WORDS):
    """One dict per clip: word, speaker, speed, pitch, padding, noise and output format.

    Deterministic for ``seed``; the metadata columns follow UrbanSound8K.csv
    (``fsID`` = one speaker saying one word, so it never spans two folds).
    """
    rng = random.Random(seed)
    plan = []
    for fold in range(1, N_FOLDS + 1):
        speakers = speakers_of_fold(fold)
        for class_id, word in enumerate(words):
            for n in range(clips_per_class_per_fold):
                voice, variant = speakers[rng.randrange(len(speakers))]
                speaker_index = VOICES.index(voice) * len(VARIANTS) + VARIANTS.index(variant)
                fs_id = 10000 + speaker_index * 100 + class_id
                noisy = rng.random() < NOISY_FRACTION
                bits, encoding = rng.choice(ENCODINGS)
                plan.append({
                    "slice_file_name": f"{fs_id}-{class_id}-{fold}-{n}.wav",
                    "fsID": fs_id, "fold": fold, "classID": class_id, "class": word,
                    "voice": f"{voice}+{variant}", "speed": rng.randint(110, 220), "pitch": rng.randint(15, 85),
                    "lead_s": round(rng.uniform(0.0, 0.4), 3), "target_s": round(rng.uniform(1.0, 2.0), 3),
                    "noise": rng.choice(NOISES) if noisy else None,
                    "noise_volume": round(10 ** rng.uniform(-2.0, -1.0), 4),   # about 20 to 0 dB below full scale
                    "gain_db": round(rng.uniform(-12.0, -1.0), 1),
                    "rate": rng.choice(RATES), "channels": rng.choice(CHANNELS), "bits": bits, "encoding": encoding,
                    "salience": 2 if noisy else 1,   # UrbanSound8K: 1 foreground, 2 background
                })
    return plan


def _run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")


def coloured_noise(kind, n_samples, seed):
    """White, pink (1/f power) or brown (1/f^2 power) noise [n_samples], peak 1, reproducible for ``seed``."""
    import numpy as np

    white = np.random.default_rng(seed).standard_normal(n_samples)
    if kind != "whitenoise":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n_samples)
        freqs[0] = freqs[1] if n_samples > 2 else 1.0
        spectrum /= np.sqrt(freqs) if kind == "pinknoise" else freqs
        white = np.fft.irfft(spectrum, n_samples)
    white = white - white.mean()
    return white / max(np.abs(white).max(), 1e-12)


def make_clip(clip, path, workdir):
    """Speak ``clip['class']`` with espeak-ng, pad / mix noise / convert with sox into ``path``; returns its duration (s)."""
    import soundfile

    speech = os.path.join(workdir, "speech.wav")
    padded = os.path.join(workdir, "padded.wav")
    _run(["espeak-ng", "-v", clip["voice"], "-s", str(clip["speed"]), "-p", str(clip["pitch"]), "-w", speech,
          clip["class"]])
    info = soundfile.info(speech)
    duration = max(clip["target_s"], clip["lead_s"] + info.duration + 0.05)
    # Leading silence, then cut / pad the end to the clip's duration.
    _run(["sox", "-R", speech, padded, "pad", str(clip["lead_s"]), str(duration), "trim", "0", f"{duration:.3f}"])
    out_format = ["-r", str(clip["rate"]), "-c", str(clip["channels"]), "-b", str(clip["bits"]),
                  "-e", clip["encoding"], path]
    if clip["noise"]:
        noise = os.path.join(workdir, "noise.wav")
        samples = round(duration * info.samplerate)
        # Drawn here, not by `sox synth`, whose generator cannot be seeded per clip: one seed per file name.
        soundfile.write(noise, clip["noise_volume"] * coloured_noise(clip["noise"], samples,
                                                                     zlib.crc32(clip["slice_file_name"].encode())),
                        info.samplerate, subtype="PCM_16")
        _run(["sox", "-R", "-m", padded, noise, *out_format, "gain", "-n", str(clip["gain_db"])])
    else:
        _run(["sox", "-R", padded, *out_format, "gain", "-n", str(clip["gain_db"])])
    return duration


def build_corpus(folder, clips_per_class_per_fold, seed=0, workers=2, words=WORDS):
    """Build the corpus in ``folder`` (UrbanSound8K layout) unless it is already there; returns ``folder``.

    The marker file (written last) records what was built: a folder with a marker of other
    settings, or without a marker (an interrupted build), is built again from scratch.
    """
    spec = {"version": CORPUS_VERSION, "clips_per_class_per_fold": clips_per_class_per_fold, "seed": seed,
            "words": list(words)}
    marker = os.path.join(folder, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f).get("spec") == spec:
                return folder
    missing = missing_tools()
    if missing:
        raise SystemExit(
            f"bench/sanity.py: {' and '.join(missing)} not found on the PATH; the corpus is spoken by espeak-ng "
            f"and converted by sox: install them (Debian/Ubuntu: apt-get install espeak-ng sox)")
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    plan = clip_plan(clips_per_class_per_fold, seed, words)
    for fold in range(1, N_FOLDS + 1):
        os.makedirs(os.path.join(folder, "audio", f"fold{fold}"), exist_ok=True)
    os.makedirs(os.path.join(folder, "metadata"), exist_ok=True)

    def one(clip):
        with tempfile.TemporaryDirectory() as workdir:
            path = os.path.join(folder, "audio", f"fold{clip['fold']}", clip["slice_file_name"])
            return make_clip(clip, path, workdir)

    start = time.time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        durations = list(pool.map(one, plan))
    with open(os.path.join(folder, "metadata", "UrbanSound8K.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        for clip, duration in zip(plan, durations):
            writer.writerow([clip["slice_file_name"], clip["fsID"], 0.0, round(duration, 6), clip["salience"],
                             clip["fold"], clip["classID"], clip["class"]])
    with open(os.path.join(folder, "clips.json"), "w") as f:
        json.dump(plan, f, indent=0)
    with open(marker, "w") as f:
        json.dump({"spec": spec, "n_clips": len(plan), "build_s": round(time.time() - start, 1)}, f)
    print(f"[sanity] corpus: {len(plan)} clips in {folder} ({time.time() - start:.0f} s)", flush=True)
    return folder


# ---------------------------------------------------------------- settings and methods
#: Settings small enough for 2 CPU cores. ``epochs``: supervised / replay recipe; ``ssl_epochs``:
#: SimCLR / SimSiam per task; ``linear_epochs``: linear evaluation; ``memory``: replay recipe memory
#: size; ``keep``: replay_num_keep of sup_train (clips per finished task); ``fixed_memory``: memory_size of
#: the sup_train strategies with a fixed-size memory (er_ace, derpp, gdumb, icarl).
SETTINGS = {
    "full": {"clips_per_class_per_fold": 8, "epochs": 10, "ssl_epochs": 10, "linear_epochs": 15, "linear_lr": 0.05,
             "memory": 60, "keep": 16, "fixed_memory": 60,
             "strategies": ["lwf", "ewc", "icarl", "derpp", "er_ace", "gdumb"],
             "policies": ["random", "uncertainty", "reservoir", "prototype"], "ssl": ["simclr", "simsiam"]},
    "quick": {"clips_per_class_per_fold": 4, "epochs": 4, "ssl_epochs": 3, "linear_epochs": 8, "linear_lr": 0.05,
              "memory": 30, "keep": 8, "fixed_memory": 30,
              "strategies": ["lwf"], "policies": ["random"], "ssl": ["simclr"]},
}
ALL_CLASSES = "[[3,8,9,4,1,7,5,2,6,0]]"
#: A 3-block CNN instead of the us8k YAMLs' CNN14 (sup_train, linclf) and ECAPA-TDNN (simclr, simsiam):
#: the CNN14 of ``encoder: cnn14`` with conv blocks of 16 and 32 channels, then its embedding block of
#: 64 channels (``embedding_head: pool``: mean + max pool of that block, as cssl_sound's CNN14), on 40 mel bands.
SMALL_CNN = ["--encoder=cnn14", "--encoder_channels=[16,32]", "--emb_dim=64", "--embedding_head=pool", "--n_mels=40"]
#: sup_train has no ``encoder`` key (always CNN14).
SMALL_CNN_SUP = [arg for arg in SMALL_CNN if not arg.startswith("--encoder=")]
#: The YAMLs' SpecAugment (2 time masks of up to 10 frames, 2 frequency masks, time warp 8 frames) with the
#: frequency masks scaled to the 40 mel bands: up to 5 bins, the YAMLs' 10 of 80 (two masks of 10 of 40
#: bands hide up to half of the spectrum and kept the CNN's training loss at ln 10 for 10 epochs).
SCALED_SPECAUGMENT = ["--augmentation=!new:soundcl.data.augment.TimeFreqAugment {enabled: True, time_warp: True, "
                      "time_warp_window: 8, n_freq_mask: 2, freq_mask_width: [0, 5], n_time_mask: 2, "
                      "time_mask_width: [0, 10], time_roll: False, freq_shift: 0}"]
#: Adam at 1e-3 (cosine to 1e-4 for sup_train) instead of the YAMLs' SGD (cssl_sound: lr 0.00375 with
#: warm-up, momentum 0.9). That schedule is sized for cssl_sound's ~11,000 steps (50 epochs of UrbanSound8K);
#: the bench has 80 to 400 per task, in which SGD left the training loss at ln 10 even at lr 0.05 and 0.3
#: (bench/README.md, "Sanity bench"). The replay recipe already trains with Adam 1e-3 (ASC-CL).
ADAM_SUP = ["--opt_class=!name:torch.optim.Adam", "--lr=0.001", "--lr_final=0.0001", "--warmup_epochs=0"]
#: The SSL YAMLs' rate is ``batch_size * lr_per_256 / 256``: 16 * 0.016 / 256 = 1e-3 with Adam.
ADAM_SSL = ["--opt_class=!name:torch.optim.Adam", "--lr_per_256=0.016"]
#: Kim et al.'s BC-ResNet-2 (``replay_encoder: bcresnet``, width 2) on 32 mel bands instead of the replay
#: YAML's ASC-CL BCResNet_Mod (c = 40) on 64, which does not fit the budget on 2 CPU cores. Width 1 was
#: too small: on the 10-class joint task its training loss was still 1.44 after 10 epochs (joint
#: A_last 56.2 %); width 2 reaches 0.66 (91.2 %) in the same epochs (bench/README.md, "Sanity bench").
SMALL_BCRESNET = ["--replay_encoder=bcresnet", "--bcresnet_c=2", "--n_mels=32"]
SAMPLE = ["--train_duration=1.5", "--batch_size=16"]
#: SimCLR / SimSiam views: two 1.0 s crops. With 1.5 s crops of these 1-2 s clips, 49 % of the clips are
#: shorter than the crop, so both views are the same waveform (mean overlap 97 %) and differ by SpecAugment
#: only; at 1.0 s no two views are the same (overlap 82 %) and a crop keeps 70 % of the word on average
#: (bench/README.md, "Why SSL lost to a random encoder": linear seen 47.5 -> 56.2 % at the same 80 steps per task).
SSL_SAMPLE = ["--train_duration=1.0", "--batch_size=16"]
LOADERS = ["--train_dataloader_opts={batch_size: 16, shuffle: True, num_workers: 0}",
           "--eval_dataloader_opts={batch_size: 32, num_workers: 0}"]
#: frozen_cil YAML of each head (hparams/us8k/<head>_eval.yaml) -> its bench overrides.
FROZEN_HEADS = {"ncm": [], "ranpac": ["--ranpac_M=2000"]}
SSL_LOADERS = ["--train_dataloader_opts={batch_size: 16, shuffle: True, drop_last: True, num_workers: 0}",
               "--eval_dataloader_opts={batch_size: 32, num_workers: 0}"]


def method_specs(settings):
    """The runs, in order: name -> (recipe, hparams file, overrides, family).

    ``family`` groups the runs whose ordering is checked against the same fine-tuning and joint.
    """
    e, s = settings["epochs"], settings["ssl_epochs"]
    sup = ["hparams/us8k/sup_train.yaml", *SMALL_CNN_SUP, *SAMPLE, *LOADERS, *ADAM_SUP, *SCALED_SPECAUGMENT,
           f"--number_of_epochs={e}"]
    rep = ["hparams/us8k/replay_train.yaml", *SMALL_BCRESNET, *SAMPLE, *LOADERS, f"--number_of_epochs={e}",
           f"--patience={e}", f"--memory_size={settings['memory']}"]
    specs = {
        "sup/joint": ("sup_train", [*sup, "--strategy=joint"], "sup"),
        "sup/finetune": ("sup_train", [*sup, "--replay_num_keep=0"], "sup"),
        f"sup/replay{settings['keep']}": ("sup_train", [*sup, f"--replay_num_keep={settings['keep']}"], "sup"),
        "replay/joint": ("replay_train", [*rep, "--mode=finetune", f"--task_classes={ALL_CLASSES}"], "replay"),
        "replay/finetune": ("replay_train", [*rep, "--mode=finetune"], "replay"),
    }
    for policy in settings["policies"]:
        specs[f"replay/{policy}"] = ("replay_train", [*rep, "--mode=replay", f"--mem_manage={policy}"], "replay")
    ssl_common = [*SMALL_CNN, *SSL_SAMPLE, *SSL_LOADERS]
    for name in settings["ssl"]:
        # The YAMLs' 5 warm-up epochs are sized for 50 epochs: a tenth of the run here.
        specs[f"{name}/encoder"] = (f"{name}_train", [f"hparams/us8k/{name}_train.yaml", *ssl_common, *ADAM_SSL,
                                                      *SCALED_SPECAUGMENT,
                                                      f"--number_of_epochs={s}", f"--warmup_epochs={s // 10}"],
                                    "encoder")
    specs["random/encoder"] = ("simclr_train", ["hparams/us8k/simclr_train.yaml", *ssl_common, "--number_of_epochs=1",
                                                "--lr_per_256=0.0", "--warmup_epochs=0"], "encoder")
    linear = ["hparams/us8k/linclf_train.yaml", *SMALL_CNN, *LOADERS, "--linclf_train_type=seen",
              f"--number_of_epochs={settings['linear_epochs']}", f"--lr={settings['linear_lr']}"]
    for encoder in [*settings["ssl"], "random", "sup_finetune"]:
        source = "sup/finetune" if encoder == "sup_finetune" else f"{encoder}/encoder"
        specs[f"linear/{encoder}"] = ("linclf_train", [*linear, f"@encoder={source}"], "linear")
    # Class-incremental baselines on one frozen encoder (issue 27 section 3): the task-0 checkpoint of the
    # random and SimCLR encoder runs, no replay, each clip embedded once. RanPAC's M is 2000 (the YAML's
    # 10000 is a 10000 x 10000 float64 Gram matrix solved 18 times per task: minutes on 2 cores).
    for encoder in ["random", *[name for name in settings["ssl"] if name == "simclr"]]:
        for head in FROZEN_HEADS:
            specs[f"{head}/{encoder}"] = ("frozen_cil", [f"hparams/us8k/{head}_eval.yaml", *SMALL_CNN, *LOADERS,
                                                         *FROZEN_HEADS[head], f"@encoder={encoder}/encoder"], "frozen")
    # Cures of small replay's recency bias (issue 27): each beside sup/replay<keep>, same memory.
    keep = f"--replay_num_keep={settings['keep']}"
    specs[f"sup/bic{settings['keep']}"] = ("sup_train", [*sup, "--strategy=bic", keep], "sup")
    specs[f"sup/wa{settings['keep']}"] = ("sup_train", [*sup, "--strategy=wa", keep], "sup")
    specs[f"sup/replay{settings['keep']}_balanced"] = ("sup_train", [*sup, keep, "--replay_batches=class_balanced"],
                                                      "sup")
    for name in settings["strategies"]:
        specs[f"sup/{name}"] = ("sup_train", [*sup, f"--strategy={name}", f"--memory_size={settings['fixed_memory']}"],
                                "sup")
    return specs


#: "Precise BN" before every validation (and so before the best-epoch choice and the test): with
#: 6 to 40 steps per epoch the BatchNorm running averages lag the weights, and eval-mode accuracy
#: falls to chance while train-mode accuracy is high (bench/README.md, "Sanity bench").
RECALIBRATE_BN_CLIPS = 256


def hparams_file(out, rel):
    """The YAML ``rel`` of the repository, with ``recalibrate_bn_clips`` added where it lacks the key.

    ``recalibrate_bn_clips`` is an hparam of every supervised Brain (default 0) but only some YAMLs
    list it, and a key absent from the YAML cannot be given on the command line: the bench writes a
    copy with the key added (``<out>/hparams/``) and gives the value as an override.
    """
    source = os.path.join(REPO_ROOT, rel)
    with open(source) as f:
        text = f.read()
    if any(line.startswith("recalibrate_bn_clips:") for line in text.splitlines()):
        return source
    target = os.path.join(out, "hparams", rel.replace("/", "_"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as f:
        f.write(text + f"\n# added by bench/sanity.py\nrecalibrate_bn_clips: {RECALIBRATE_BN_CLIPS}\n")
    return target


def run_dir(out, name):
    return os.path.join(out, "runs", name.replace("/", "_"))


def seed_dir(out, name):
    """``<run_dir>/run/<seed>``: the recipe's output folder (the seed is the YAML's: 1986, the replay recipe's 3)."""
    found = sorted(glob.glob(os.path.join(run_dir(out, name), "run", "*", "")))
    return found[0].rstrip(os.sep) if found else os.path.join(run_dir(out, name), "run", "missing")


def recipe_argv(name, spec, out, corpus):
    """The recipe's argv (YAML, then ``--key=value`` overrides) of method ``name``."""
    recipe_name, args, family = spec
    recalibrate = family in ("sup", "replay")
    yaml_path = hparams_file(out, args[0]) if recalibrate else os.path.join(REPO_ROOT, args[0])
    argv = [yaml_path, f"--data_folder={corpus}", f"--output_base={run_dir(out, name)}",
            "--experiment_name=run", f"--audio_cache={os.path.join(out, 'audio_cache')}", "--noprogressbar"]
    if recalibrate:
        argv.append(f"--recalibrate_bn_clips={RECALIBRATE_BN_CLIPS}")
    for arg in args[1:]:
        if arg.startswith("@encoder="):
            argv.append(f"--ssl_checkpoints_dir={os.path.join(seed_dir(out, arg.split('=', 1)[1]), 'save')}")
        else:
            argv.append(arg)
    return argv


def run_method(name, spec, out, corpus):
    """Run one method in-process (or read back its finished results.json); returns its summary row."""
    import runpy

    recipe_name, args, family = spec
    folder = run_dir(out, name)
    argv = recipe_argv(name, spec, out, corpus)
    results_file = os.path.join(seed_dir(out, name), "results.json")
    timing_file = os.path.join(folder, "wall_time_s.json")
    if os.path.isfile(results_file) and os.path.isfile(timing_file):
        with open(results_file) as f:
            results = json.load(f)
        with open(timing_file) as f:
            wall = json.load(f)["wall_time_s"]
    else:
        start = time.time()
        script = os.path.join(REPO_ROOT, "recipes", f"{recipe_name}.py")
        results = runpy.run_path(script, run_name=f"sanity_{recipe_name}")["main"](argv)
        wall = time.time() - start
        with open(timing_file, "w") as f:
            json.dump({"wall_time_s": wall, "argv": argv}, f, indent=1)
    row = {"method": name, "family": family, "wall_time_s": round(wall, 1)}
    for key in ("A_last", "A_avg", "BWT", "forgetting"):
        value = results.get(key)
        row[key] = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    print(f"[sanity] {name}: A_last {_pct(row['A_last'])} BWT {_pct(row['BWT'])} ({wall:.0f} s)", flush=True)
    return row


# ---------------------------------------------------------------- orderings
JOINT_MIN = 0.5             # joint A_last: 5x chance (10 classes)
FINETUNE_MAX_BWT = -0.3     # fine-tuning's BWT at most this
JOINT_TOLERANCE = 0.02      # a method may match joint up to this much above it


def check_orderings(rows):
    """The orderings that held or not, from ``rows`` (method -> row with A_last, BWT, forgetting).

    Returns a list of dicts ``{"name", "held" (bool or None when a run is missing), "detail",
    "kind"}`` where ``kind`` is ``expected`` (the literature's ordering) or ``report`` (a
    comparison reported whichever way it comes out).
    """
    checks = []

    def get(method, key):
        row = rows.get(method)
        return None if row is None else row.get(key)

    def add(name, held, detail, kind="expected"):
        checks.append({"name": name, "held": held, "detail": detail, "kind": kind})

    for family in ("sup", "replay"):
        joint, finetune = get(f"{family}/joint", "A_last"), get(f"{family}/finetune", "A_last")
        if joint is not None:
            add(f"{family}: joint well above chance", joint >= JOINT_MIN,
                f"joint A_last {_pct(joint)} (>= {_pct(JOINT_MIN)} expected; chance 10 %)")
        bwt = get(f"{family}/finetune", "BWT")
        if bwt is not None:
            add(f"{family}: fine-tuning forgets", bwt <= FINETUNE_MAX_BWT,
                f"fine-tuning BWT {_pct(bwt)} (<= {_pct(FINETUNE_MAX_BWT)} expected)")
        for method, row in rows.items():
            if row.get("family") != family or method in (f"{family}/joint", f"{family}/finetune"):
                continue
            value = row.get("A_last")
            if None in (value, joint, finetune):
                add(f"{method} between fine-tuning and joint", None, "a run is missing")
                continue
            add(f"{method} between fine-tuning and joint", finetune < value <= joint + JOINT_TOLERANCE,
                f"fine-tuning {_pct(finetune)} < {_pct(value)} <= joint {_pct(joint)}")

    random_acc = get("linear/random", "A_last")
    sup_forgetting = get("linear/sup_finetune", "forgetting")
    for method in sorted(m for m in rows if m.startswith("linear/") and m not in ("linear/random",
                                                                                    "linear/sup_finetune")):
        acc, forg = rows[method].get("A_last"), rows[method].get("forgetting")
        name = method.split("/", 1)[1]
        if random_acc is not None and acc is not None:
            add(f"{name} (linear seen) beats a random encoder", acc > random_acc,
                f"{_pct(acc)} vs random {_pct(random_acc)}")
        if sup_forgetting is not None and forg is not None:
            add(f"{name} (linear seen) forgets less than supervised fine-tuning", forg < sup_forgetting,
                f"forgetting {_pct(forg)} vs supervised fine-tuned {_pct(sup_forgetting)}", kind="report")
    for head in FROZEN_HEADS:  # frozen-encoder baselines: a trained encoder vs a random one (reported)
        trained, rand = get(f"{head}/simclr", "A_last"), get(f"{head}/random", "A_last")
        if trained is not None and rand is not None:
            add(f"{head} on the SimCLR encoder beats {head} on a random encoder", trained > rand,
                f"A_last {_pct(trained)} vs {_pct(rand)}", kind="report")
    for encoder in ("random", "simclr"):  # RanPAC beat NCM on every benchmark of McDonnell et al. (reported)
        ranpac, ncm = get(f"ranpac/{encoder}", "A_last"), get(f"ncm/{encoder}", "A_last")
        if ranpac is not None and ncm is not None:
            add(f"ranpac beats ncm on the {encoder} encoder", ranpac > ncm, f"A_last {_pct(ranpac)} vs {_pct(ncm)}",
                kind="report")
    unc, rnd = get("replay/uncertainty", "A_last"), get("replay/random", "A_last")
    if unc is not None and rnd is not None:
        add("uncertainty memory beats random memory", unc > rnd,
            f"A_last {_pct(unc)} vs {_pct(rnd)} (BWT {_pct(get('replay/uncertainty', 'BWT'))} vs "
            f"{_pct(get('replay/random', 'BWT'))})", kind="report")
    return checks


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


def format_table(rows):
    lines = [f"{'method':<22}{'A_last':>9}{'A_avg':>9}{'BWT':>9}{'forgetting':>12}{'wall time':>11}"]
    for row in rows.values():
        cells = [f"{100 * row[k]:.1f}" if row.get(k) is not None else "n/a" for k in ("A_last", "A_avg", "BWT",
                                                                                       "forgetting")]
        lines.append(f"{row['method']:<22}{cells[0]:>9}{cells[1]:>9}{cells[2]:>9}{cells[3]:>12}"
                     f"{row['wall_time_s']:>10.0f}s")
    if any(row.get("family") == "encoder" for row in rows.values()):
        lines.append("(<x>/encoder: the SSL recipe's own cosine-kNN matrix; linear/<x>: linear evaluation `seen` "
                     "of that encoder)")
    if any(row.get("family") == "frozen" for row in rows.values()):
        lines.append("(ncm/<x>, ranpac/<x>: recipes/frozen_cil.py on the task-0 checkpoint of <x>/encoder, frozen, "
                     "no replay)")
    return "\n".join(lines)


def format_checks(checks):
    marks = {True: "held", False: "DID NOT HOLD", None: "not run"}
    return "\n".join(f"  [{marks[c['held']]:^12}] {c['name']}{' (reported)' if c['kind'] == 'report' else ''}: "
                     f"{c['detail']}" for c in checks)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the corpus, the runs and sanity.json")
    parser.add_argument("--quick", action="store_true", help="fewer clips, epochs and methods: a smoke check")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the method names (default: all)")
    parser.add_argument("--cpu_threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument("--ssl_epochs", type=int, default=None,
                        help="SimCLR / SimSiam epochs per task instead of the mode's (a budget study: give it its own --out)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    if args.ssl_epochs is not None:
        settings["ssl_epochs"] = args.ssl_epochs
    out = os.path.abspath(args.out)
    if args.quick:  # its own runs: the settings differ
        out = os.path.join(out, "quick")
    os.makedirs(out, exist_ok=True)
    corpus = build_corpus(os.path.join(out, "corpus"), settings["clips_per_class_per_fold"])
    specs = method_specs(settings)
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in specs]
        if unknown:
            raise SystemExit(f"bench/sanity.py: unknown methods {unknown}; expected some of {', '.join(specs)}")
        specs = {m: specs[m] for m in specs if m in wanted}
    start = time.time()
    rows = {}
    for name, (recipe_name, margs, family) in specs.items():
        rows[name] = run_method(name, (recipe_name, [*margs, f"--cpu_threads={args.cpu_threads}"], family), out,
                                corpus)
    checks = check_orderings(rows)
    table = format_table(rows)
    print(f"\n[sanity] {mode} run, {time.time() - start:.0f} s\n{table}\n\norderings:\n{format_checks(checks)}",
          flush=True)
    summary = {"mode": mode, "settings": settings, "corpus": corpus, "rows": list(rows.values()), "checks": checks,
               "total_wall_time_s": round(sum(r["wall_time_s"] for r in rows.values()), 1)}
    path = os.path.join(out, f"sanity{'_quick' if args.quick else ''}.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"[sanity] {path}")
    return summary


if __name__ == "__main__":
    main()
