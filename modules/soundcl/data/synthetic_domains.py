"""The synthetic data set recorded through several "recording chains": domains for
domain-incremental learning (:mod:`soundcl.data.domains`).

Domain ``studio`` is the embedded synthetic set as generated (:mod:`soundcl.data.synthetic`).
Every other domain is the same clips played through another recording chain
(:data:`RECORDING_CHAINS`), as TAU 2022 Mobile's simulated devices are device A's
recordings through other impulse responses: a clock-rate error (every frequency scaled by
``rate``, the clip shortened or lengthened), a band-pass filter, a mirrored spectrum
(``invert_hz``, a radio on the wrong sideband), a level change and
added noise at a given SNR, then 16 kHz 16-bit mono. The noise is seeded per clip and
domain, so the same parameters always give the same bytes. The copies are written under
``domain_folder/<domain>/fold<f>/`` (only the clips of the classes and folds the run
uses) and reused while their parameters are the same.

Manifest rows: ``ID`` ``<domain>-<clip>``, the UrbanSound8K fold as ``fold``, and the
``domain`` column; the parallel copies of one clip share its fold, hence its split.
"""
import json
import logging
import os
import zlib

import numpy as np
import soundfile

from soundcl.base.atomic import write_json_atomic
from soundcl.data import synthetic, us8k
from soundcl.data.domains import validate_task_domains
from soundcl.data.manifest import task_manifest_paths, write_unreadable_list
from soundcl.data.probe import probe_rows
from soundcl.data.skeleton import SPLITS, write_manifests_once
from soundcl.data.splits import validate_task_classes

logger = logging.getLogger(__name__)

#: Domain -> recording chain: ``rate`` (frequency scale), band edges in Hz (None: open),
#: ``gain_db`` and the SNR in dB of added white (``noise: white``) or pink noise.
#: ``studio`` (no chain) is the generated set itself.
RECORDING_CHAINS = {
    "studio": None,
    # A phone line: 300-3400 Hz band, a fast clock (frequencies x 1.3), noisy.
    "phone": {"rate": 1.3, "highpass_hz": 300.0, "lowpass_hz": 3400.0, "gain_db": 6.0, "snr_db": 5.0,
              "noise": "white"},
    # A far, muffled recorder with a slow clock (frequencies x 0.7) in pink background noise.
    "street": {"rate": 0.7, "highpass_hz": None, "lowpass_hz": 1500.0, "gain_db": -6.0, "snr_db": 0.0,
               "noise": "pink"},
    # A single-sideband radio tuned to the wrong sideband: the 0-4 kHz band mirrored (f -> 4000 - f:
    # rising sweeps fall, low noise turns high), in white noise.
    "radio": {"rate": 1.0, "highpass_hz": None, "lowpass_hz": None, "invert_hz": 4000.0, "gain_db": 0.0,
              "snr_db": 10.0, "noise": "white"},
}
OUTPUT_RATE = 16000
OPTS_FILE = "synthetic_domains_opts.json"
CHAIN_VERSION = 1


def prepare(data_folder, save_folder, domain_folder, task_domains, task_classes=us8k.DEFAULT_TASK_CLASSES,
            train_folds=us8k.DEFAULT_TRAIN_FOLDS, valid_folds=us8k.DEFAULT_VALID_FOLDS,
            test_folds=us8k.DEFAULT_TEST_FOLDS, clips_per_class_per_fold=6, seed=1234, chain_seed=0,
            skip_prep=False, on_bad_audio="error"):
    """Generate the synthetic set and its domains (if needed); write domain-task manifests.

    Arguments as :func:`soundcl.data.synthetic.prepare`, plus ``domain_folder`` (where the
    other domains' copies go), ``task_domains`` (groups of :data:`RECORDING_CHAINS` names,
    one task each) and ``chain_seed`` (the chains' noise). ``task_classes``: the classes
    of every task (its groups merged).

    Returns
    -------
    dict ``classes``, ``n_tasks``, ``task_domains`` and ``manifests`` (``split -> [path per task]``).
    """
    task_domains = validate_task_domains(task_domains)
    unknown = [d for group in task_domains for d in group if d not in RECORDING_CHAINS]
    if unknown:
        raise ValueError(f"task_domains names {unknown}: the synthetic domains are {', '.join(RECORDING_CHAINS)}")
    data_folder, save_folder = os.path.abspath(data_folder), os.path.abspath(save_folder)
    domain_folder = os.path.abspath(domain_folder)
    manifests = task_manifest_paths(save_folder, SPLITS, len(task_domains))
    result = {"classes": list(synthetic.CLASS_NAMES), "n_tasks": len(task_domains), "task_domains": task_domains,
              "manifests": manifests}
    if skip_prep:
        return result
    folds_by_split = us8k._validate_folds(train_folds, valid_folds, test_folds)
    synthetic.generate(data_folder, clips_per_class_per_fold=clips_per_class_per_fold, seed=seed)
    metadata_file = os.path.join(data_folder, us8k.METADATA_RELPATH)
    entries, classes = us8k.read_metadata(metadata_file)
    task_classes = validate_task_classes(task_classes, len(classes))
    used = {c for group in task_classes for c in group}
    split_of_fold = {fold: split for split, folds in folds_by_split.items() for fold in folds}
    entries = [e for e in entries if e["classID"] in used and e["fold"] in split_of_fold]
    domains = [d for group in task_domains for d in group]
    write_domain_copies(data_folder, domain_folder, entries, domains, chain_seed)
    result["classes"] = classes
    opts = {"data_folder": data_folder, "domain_folder": domain_folder, "folds": folds_by_split,
            "chains": {d: RECORDING_CHAINS[d] for d in domains}, "chain_seed": chain_seed}

    def make_rows():
        rows = []
        for domain in domains:
            for e in entries:
                stem = os.path.splitext(e["slice_file_name"])[0]
                rows.append({"ID": f"{domain}-{stem}", "duration": 0.0, "wav": clip_path(
                    data_folder, domain_folder, domain, e), "class_idx": e["classID"], "label": e["class"],
                    "fold": e["fold"], "domain": domain})
        rows, unreadable = probe_rows(rows, "synthetic domain clips", on_bad_audio)
        write_unreadable_list(save_folder, unreadable)
        return {split: [r for r in rows if split_of_fold[r["fold"]] == split] for split in SPLITS}, None

    write_manifests_once("synthetic domains", save_folder, opts, task_classes, make_rows, logger,
                         metadata_file=metadata_file, extra_fields=["domain"], task_domains=task_domains)
    return result


def clip_path(data_folder, domain_folder, domain, entry):
    """The wav of ``entry`` (a metadata row) in ``domain``."""
    if RECORDING_CHAINS[domain] is None:
        return os.path.join(data_folder, us8k.AUDIO_DIRNAME, f"fold{entry['fold']}", entry["slice_file_name"])
    return os.path.join(domain_folder, domain, f"fold{entry['fold']}", entry["slice_file_name"])


def write_domain_copies(data_folder, domain_folder, entries, domains, chain_seed):
    """The clips of ``entries`` through each chain of ``domains`` (skipped when up to date)."""
    for domain in domains:
        chain = RECORDING_CHAINS[domain]
        if chain is None:
            continue
        folder = os.path.join(domain_folder, domain)
        params = {"version": CHAIN_VERSION, "chain": chain, "chain_seed": chain_seed, "source": data_folder,
                  "clips": sorted(e["slice_file_name"] for e in entries)}
        opts_file = os.path.join(folder, OPTS_FILE)
        if os.path.isfile(opts_file) and all(os.path.isfile(clip_path(data_folder, domain_folder, domain, e))
                                             for e in entries):
            with open(opts_file, encoding="utf-8") as f:
                if json.load(f) == params:
                    continue
        logger.info("synthetic domain %s: writing %d clips to %s", domain, len(entries), folder)
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(opts_file):
            os.remove(opts_file)
        for e in entries:
            audio, rate = soundfile.read(clip_path(data_folder, domain_folder, "studio", e), always_2d=True)
            rng = np.random.default_rng([chain_seed, zlib.crc32(domain.encode()), zlib.crc32(
                e["slice_file_name"].encode())])
            out = record(audio.mean(axis=1), rate, chain, rng)
            path = clip_path(data_folder, domain_folder, domain, e)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            soundfile.write(path, out, OUTPUT_RATE, subtype="PCM_16")
        write_json_atomic(opts_file, params)


def record(signal, sample_rate, chain, rng):
    """``signal`` (mono float at ``sample_rate``) through ``chain``: 16 kHz float in [-1, 1]."""
    n_out = max(1, int(round(len(signal) / sample_rate * OUTPUT_RATE / chain["rate"])))
    # Output sample i reads the input at time i * rate / OUTPUT_RATE: frequencies x rate.
    times = np.arange(n_out) * chain["rate"] / OUTPUT_RATE
    out = np.interp(times * sample_rate, np.arange(len(signal)), signal)
    spectrum = np.fft.rfft(out)
    freqs = np.fft.rfftfreq(n_out, 1.0 / OUTPUT_RATE)
    if chain.get("invert_hz"):  # keep 0..invert_hz, mirrored: bin i takes bin (top - i)
        top = int(np.searchsorted(freqs, chain["invert_hz"]))
        mirrored = np.zeros_like(spectrum)
        mirrored[:top + 1] = np.conj(spectrum[top::-1])
        spectrum = mirrored
    response = np.ones_like(freqs)
    if chain["lowpass_hz"]:
        response /= np.sqrt(1.0 + (freqs / chain["lowpass_hz"]) ** 8)  # 4th-order Butterworth magnitude
    if chain["highpass_hz"]:
        response /= np.sqrt(1.0 + (chain["highpass_hz"] / np.maximum(freqs, 1.0)) ** 8)
    out = np.fft.irfft(spectrum * response, n=n_out) * 10.0 ** (chain["gain_db"] / 20.0)
    noise = rng.standard_normal(n_out)
    if chain["noise"] == "pink":
        shape = 1.0 / np.sqrt(np.maximum(freqs, 20.0))
        noise = np.fft.irfft(np.fft.rfft(noise) * shape, n=n_out)
    signal_rms = np.sqrt(np.mean(out ** 2)) + 1e-9
    noise *= signal_rms / (np.sqrt(np.mean(noise ** 2)) + 1e-12) * 10.0 ** (-chain["snr_db"] / 20.0)
    return np.clip(out + noise, -1.0, 1.0)
