"""The whole path in one ONNX graph: mono waveform [batch, samples] in, class probabilities out.

    peak normalisation (as soundcl.data.audio.AudioPipeline) -> log-mel front end -> normaliser
    -> encoder + head (float32, or the run's int8 model as a QDQ twin) -> seen classes -> softmax

:func:`export_front_end` gives an ONNX-exportable copy of a run's front end:

* ``speechbrain.lobes.features.Fbank`` -> :class:`ConvFbank`, the same computation with the STFT
  as a strided Conv1d over a windowed DFT basis (hand-written because ONNX's STFT/DFT ops run a
  400-point, non-power-of-two transform in onnxruntime as a slow naive DFT, and the exporters give
  them only for some front ends; a DFT as a convolution is one GEMM-backed op everywhere);
* ``soundcl.models.frontend.LogMelFrontEnd`` (torchlibrosa: already a Conv1d STFT) as it is;
* normalisers: ``InputNormalization`` (global) -> its fixed statistics, ``MelBatchNorm`` (eval)
  as it is, ``FixedNormalization`` -> identity.

Anything else is refused with its type named. The graph takes every clip of a batch at the
batch's length (no padding mask: pad clips to one length, or score them one at a time, as
:meth:`soundcl.inference.ContinualClassifier.classify_file` does).
"""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Input / output names of the exported graph.
INPUT, OUTPUT = "waveform", "probs"


class PeakNormalize(nn.Module):
    """wavs [batch, samples] -> each clip scaled to a peak of 1 (silent clips: zeros), as
    :func:`soundcl.data.audio.peak_normalize`."""

    def __init__(self, eps=1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, wavs):
        peak = wavs.abs().amax(dim=1, keepdim=True)
        return torch.where(peak > self.eps, wavs / peak.clamp(min=self.eps), torch.zeros_like(wavs))


class ConvFbank(nn.Module):
    """speechbrain ``Fbank`` (no deltas / context, frozen filters): wavs [batch, samples] ->
    log-mel filterbanks [batch, frames, n_mels], frames = 1 + samples // hop.

    centred STFT (zero padding of n_fft // 2), window, |X|^2, triangular mel matrix,
    10 log10(max(., amin)) - 10 log10(max(amin, ref)), clipped at (clip max - top_db).
    """

    def __init__(self, fbank):
        super().__init__()
        stft, bank = fbank.compute_STFT, fbank.compute_fbanks
        if fbank.deltas or fbank.context or not bank.freeze or not bank.log_mel or bank.power_spectrogram != 2:
            raise NotImplementedError("Fbank export covers log-mel power filterbanks with frozen filters, "
                                      "no deltas / context")
        if not stft.center or stft.pad_mode != "constant" or stft.normalized_stft or not stft.onesided:
            raise NotImplementedError("Fbank export covers centred, zero-padded, unnormalised one-sided STFTs")
        n_fft, win = stft.n_fft, stft.win_length
        window = torch.zeros(n_fft)
        left = (n_fft - win) // 2  # torch.stft centres a shorter window in the frame
        window[left:left + win] = stft.window.float()
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * n / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window.double()
        self.register_buffer("basis", basis.float()[:, None, :])  # [2 * n_freq, 1, n_fft]
        with torch.no_grad():
            mel = bank._create_fbank_matrix(
                bank.f_central.repeat(bank.all_freqs_mat.shape[1], 1).transpose(0, 1),
                bank.band.repeat(bank.all_freqs_mat.shape[1], 1).transpose(0, 1))
        self.register_buffer("mel", mel.float())  # [n_freq, n_mels]
        self.n_fft, self.hop, self.n_freq = n_fft, stft.hop_length, n_fft // 2 + 1
        self.amin, self.top_db = float(bank.amin), bank.top_db
        self.offset = float(bank.multiplier * bank.db_multiplier)
        self.config = {"type": "speechbrain.lobes.features.Fbank", "sample_rate": stft.sample_rate,
                       "n_fft": n_fft, "win_length": win, "hop_length": self.hop, "window": "hamming (periodic)",
                       "center": True, "pad_mode": "constant", "n_mels": int(mel.shape[1]),
                       "f_min": float(bank.f_min), "f_max": float(bank.f_max), "power": 2,
                       "log": "10 log10(max(mel, amin)) - offset", "amin": self.amin, "offset_db": self.offset,
                       "top_db": self.top_db}

    def forward(self, wavs):
        x = F.pad(wavs[:, None, :], (self.n_fft // 2, self.n_fft // 2))
        spec = F.conv1d(x, self.basis, stride=self.hop)  # [B, 2 * n_freq, frames]
        power = spec[:, :self.n_freq] ** 2 + spec[:, self.n_freq:] ** 2
        fbanks = torch.matmul(power.transpose(1, 2), self.mel)  # [B, frames, n_mels]
        db = 10.0 * torch.log10(fbanks.clamp(min=self.amin)) - self.offset
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        return db


class GlobalNormalization(nn.Module):
    """feats [batch, frames, n_mels] -> (feats - mean) / std with a run's fixed global statistics."""

    def __init__(self, mean, std, eps):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().reshape(-1))
        self.register_buffer("std", std.detach().float().reshape(-1).clamp(min=eps))

    def forward(self, feats):
        return (feats - self.mean) / self.std


class _NoLens(nn.Module):
    """A ``(feats, lens=None)`` normaliser called on feats alone (eval mode)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, feats):
        return self.module(feats, None)


def export_front_end(compute_features, mean_var_norm):
    """ONNX-exportable copies of a run's ``compute_features`` and ``mean_var_norm``, and a dict
    describing them (written beside the model): (front_end, normalizer, config)."""
    import copy

    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    from soundcl.models.frontend import LogMelFrontEnd, MelBatchNorm

    if isinstance(compute_features, Fbank):
        front = ConvFbank(compute_features)
        config = dict(front.config)
    elif isinstance(compute_features, LogMelFrontEnd):
        front = copy.deepcopy(compute_features).cpu().eval()
        stft, logmel = front.spectrogram.stft, front.logmel
        config = {"type": "soundcl.models.frontend.LogMelFrontEnd (torchlibrosa)", "n_fft": stft.n_fft,
                  "hop_length": stft.hop_length, "window": "hann", "center": True, "pad_mode": "reflect",
                  "n_mels": int(logmel.melW.shape[1]), "power": 2, "log": "10 log10(max(mel, amin)) - 10 log10(ref)",
                  "amin": logmel.amin, "ref": logmel.ref, "top_db": logmel.top_db}
    else:
        raise NotImplementedError(f"front end {type(compute_features).__name__} has no ONNX export "
                                  f"(exported: speechbrain Fbank, soundcl LogMelFrontEnd)")
    if isinstance(mean_var_norm, InputNormalization):
        if mean_var_norm.norm_type != "global" or mean_var_norm.glob_mean.numel() == 0:
            raise ValueError(f"InputNormalization(norm_type={mean_var_norm.norm_type!r}) without global "
                             "statistics cannot be exported (it normalises with each batch's own)")
        norm = GlobalNormalization(mean_var_norm.glob_mean, mean_var_norm.glob_std, mean_var_norm.epsilon)
        config["normalization"] = {"type": "global mean / std", "mean": norm.mean.tolist(), "std": norm.std.tolist()}
    elif isinstance(mean_var_norm, MelBatchNorm):
        norm = _NoLens(copy.deepcopy(mean_var_norm).cpu().eval())
        bn = mean_var_norm.norm
        std = (bn.running_var + bn.eps).sqrt()
        config["normalization"] = {"type": "batch norm over mel bins (eval)", "mean": bn.running_mean.tolist(),
                                   "std": std.tolist(), "weight": bn.weight.tolist(), "bias": bn.bias.tolist()}
    elif type(mean_var_norm).__name__ == "FixedNormalization":
        norm = nn.Identity()
        config["normalization"] = {"type": "none"}
    else:
        raise NotImplementedError(f"normaliser {type(mean_var_norm).__name__} has no ONNX export")
    return front.eval(), norm.eval(), config


class WaveformClassifier(nn.Module):
    """wavs [batch, samples] (mono, the run's sample rate) -> probabilities [batch, n_classes_seen].

    ``model``: feats [batch, frames, n_mels], None -> logits [batch, n_outputs] (float, or a QDQ twin);
    ``class_indices``: the head outputs kept (the classes learned so far), in order.
    """

    def __init__(self, front_end, normalizer, model, class_indices, peak_normalize=True):
        super().__init__()
        self.peak = PeakNormalize() if peak_normalize else nn.Identity()
        self.front_end, self.normalizer, self.model = front_end, normalizer, model
        self.register_buffer("class_indices", torch.as_tensor(list(class_indices), dtype=torch.long))

    def forward(self, wavs):
        feats = self.normalizer(self.front_end(self.peak(wavs)))
        logits = self.model(feats, None).index_select(1, self.class_indices)
        return torch.softmax(logits, dim=-1)


def export_waveform_onnx(model, path, example_wavs, metadata, opset_version=17):
    """Write a :class:`WaveformClassifier` to ONNX (dynamic batch and samples; TorchScript exporter)
    with ``metadata`` (str -> JSON-able) in the model's metadata_props. Returns ``path``."""
    import onnx

    torch.onnx.export(model.eval(), (example_wavs.cpu(),), path, input_names=[INPUT], output_names=[OUTPUT],
                      dynamic_axes={INPUT: {0: "batch", 1: "samples"}, OUTPUT: {0: "batch"}},
                      opset_version=opset_version, dynamo=False)
    proto = onnx.load(path)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, path)
    return path


def onnx_session(path, threads=1):
    """An onnxruntime CPU session on ``threads`` intra-op threads (one: the on-device setting)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_metadata(path):
    """{key: value} of an ONNX model's metadata_props (values as written: JSON strings)."""
    import onnx

    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def write_waveform_model(path, front_end, normalizer, config, model, class_indices, classes, sample_rate,
                         peak_normalize, kind):
    """Export ``model`` (feats, None -> logits; float32 or a QDQ twin) behind the front end to ``path``,
    with its description (classes, sample rate, front end, input / output) in the model's metadata
    and in ``<path without .onnx>.json`` beside it. Returns the :class:`WaveformClassifier`."""
    from soundcl.ondevice import qdq

    wrapper = WaveformClassifier(front_end, normalizer, model, class_indices, peak_normalize).eval()
    info = {
        "classes": list(classes),
        "sample_rate": int(sample_rate),
        "input": f"{INPUT}: float32 [batch, samples], mono at sample_rate (resample / downmix before); one "
                 f"length per batch" + ("; each clip is peak-normalised inside" if peak_normalize else ""),
        "output": f"{OUTPUT}: float32 [batch, {len(classes)}], softmax over the classes, in that order",
        "model": kind,
        "front_end": config,
    }
    export_waveform_onnx(wrapper, path, torch.randn(1, int(sample_rate)) * 0.1, info)
    if "int8" in kind:
        qdq.fold_weight_quantization(path)
    with open(path[: -len(".onnx")] + ".json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return wrapper


def compare_with_reference(path, wavs, reference, threads=1):
    """onnxruntime's probabilities of each clip in ``wavs`` (list of [samples]) against
    ``reference(wav [1, samples]) -> probs [1, n]``: max abs difference and top-1 agreement."""
    session = onnx_session(path, threads)
    max_diff, agree = 0.0, 0
    for wav in wavs:
        x = wav.reshape(1, -1).float()
        (probs,) = session.run([OUTPUT], {INPUT: x.numpy()})
        ref = torch.as_tensor(reference(x), dtype=torch.float32).reshape(probs.shape)
        max_diff = max(max_diff, float((torch.as_tensor(probs) - ref).abs().max()))
        agree += int(probs.argmax(-1)[0] == int(ref.argmax(-1)[0]))
    return {"n_clips": len(wavs), "max_abs_prob_diff": max_diff, "top1_agreement": agree / max(len(wavs), 1)}
