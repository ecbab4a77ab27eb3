"""Model complexity: parameters, parameter memory and multiply-accumulates (MACs).

MACs are counted by forward hooks on the convolution and linear layers while
the model processes one clip: a convolution producing ``N`` output values costs
``N * (in_channels / groups) * prod(kernel_size)`` MACs (dilation changes where
the kernel looks, not how many products it takes; it only matters through the
output size, which the hook reads from the real output), a linear layer
``N * in_features``. Normalisation, activations, pooling and attention
products are not counted (the DCASE convention, where they are a small
fraction). The filterbank front end is excluded.

Parameter memory is ``params * bytes_per_param``; the DCASE 2023 task 1 limits
are 128 kB (131072 bytes) of parameter memory and 30 M MACs per inference.

    python -m soundcl.complexity hparams/tau22/dsmn_train.yaml      # the recipe's model
    python -m soundcl.complexity --collection                         # every model of soundcl
"""
import argparse
import logging
import sys

import torch
import torch.nn as nn

BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
DCASE2023_MAX_PARAM_BYTES = 128 * 1024
DCASE2023_MAX_MACS = 30_000_000

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_params(*modules):
    """Number of parameters (trainable or not) of ``modules``, shared ones counted once."""
    seen = {}
    for module in modules:
        for p in module.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


def param_bytes(n_params, precision="fp32"):
    """Parameter memory in bytes at ``precision`` (``fp32``, ``fp16``, ``bf16``, ``int8``)."""
    if precision not in BYTES_PER_PARAM:
        raise ValueError(f"unknown precision {precision!r}: expected one of {sorted(BYTES_PER_PARAM)}")
    return n_params * BYTES_PER_PARAM[precision]


def _layer_macs(module, output):
    """MACs of one call of a conv or linear layer for the whole batch."""
    if isinstance(module, _CONV_TYPES):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


# Hooks, not torch.utils.flop_counter.FlopCounterMode: the DCASE convention counts conv/linear layers only, FlopCounterMode every matmul (attention too); tests check 2 x MACs == its FLOPs layer by layer.
def count_macs(model, *inputs, **kwargs):
    """MACs of ``model(*inputs, **kwargs)`` per example (inputs carry a batch dimension).

    Returns
    -------
    (total MACs per example, {layer name: MACs per example})
    """
    batch = inputs[0].shape[0]
    per_layer, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES + (nn.Linear,)):
            def hook(mod, _inputs, output, name=name):
                per_layer[name] = per_layer.get(name, 0) + _layer_macs(mod, output)
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    per_layer = {k: v // batch for k, v in per_layer.items()}
    return sum(per_layer.values()), per_layer


class EncoderWithHeads(nn.Module):
    """encoder(feats, lens) followed by every head: what runs for one clip."""

    def __init__(self, encoder, heads=()):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def forward(self, feats, lens=None):
        emb = self.encoder(feats, lens)
        outs = [head(emb) for head in self.heads]
        return outs[0] if len(outs) == 1 else (outs or emb)


def complexity(encoder, heads, n_frames, n_mels, precision="fp32"):
    """Complexity of ``encoder`` + ``heads`` on one clip of ``n_frames`` x ``n_mels`` features.

    Returns a dict: params, param_bytes, macs, precision, fits_dcase2023.
    """
    model = EncoderWithHeads(encoder, heads)
    macs, per_layer = count_macs(model, torch.zeros(1, n_frames, n_mels), torch.ones(1))
    n_params = count_params(model)
    memory = param_bytes(n_params, precision)
    return {
        "params": n_params,
        "param_bytes": memory,
        "precision": precision,
        "macs": macs,
        "per_layer_macs": per_layer,
        "fits_dcase2023": memory <= DCASE2023_MAX_PARAM_BYTES and macs <= DCASE2023_MAX_MACS,
    }


def smallest_fitting_precision(n_params, macs):
    """The widest precision at which the model fits the DCASE 2023 limits, or None."""
    if macs > DCASE2023_MAX_MACS:
        return None
    for precision in ("fp32", "fp16", "int8"):
        if param_bytes(n_params, precision) <= DCASE2023_MAX_PARAM_BYTES:
            return precision
    return None


def format_table(rows):
    """Markdown table of ``[(name, n_frames, n_mels, result dict)]``."""
    lines = [
        "| model | input (frames x mels) | params | memory fp32 | memory int8 | MACs / clip | fits DCASE 2023 (128 kB, 30 M MACs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, n_frames, n_mels, res in rows:
        fit = smallest_fitting_precision(res["params"], res["macs"])
        lines.append(
            f"| {name} | {n_frames} x {n_mels} | {res['params'] / 1e3:.1f} k | "
            f"{param_bytes(res['params'], 'fp32') / 1024:.1f} kB | {param_bytes(res['params'], 'int8') / 1024:.1f} kB | "
            f"{res['macs'] / 1e6:.2f} M | {'yes, at ' + fit if fit else 'no'} |"
        )
    return "\n".join(lines)


def collection_models(n_classes=10, n_frames=101):
    """``[(name, encoder, heads, n_mels)]`` for every encoder of soundcl (1 s clips, 10 ms hop)."""
    from soundcl.models.bcresnet import BaselineCNN, BCResNet
    from soundcl.models.dsmn import DSMN
    from soundcl.models.encoders import Classifier, CNNEncoder, Cnn14, EcapaEncoder

    bcresnet, dsmn = BCResNet(n_mels=64), DSMN(128)
    models = [
        ("small CNN (synth demo)", CNNEncoder(40, (16, 32, 64), 64), 40),
        ("CNN14", Cnn14(64), 64),
        ("ECAPA-TDNN", EcapaEncoder(80, 192), 80),
        ("DSMN", dsmn, 128),
        ("BC-ResNet", bcresnet, bcresnet.n_mels),
        ("DCASE baseline CNN", BaselineCNN(), 40),
    ]
    heads = {name: [Classifier(enc.emb_dim, n_classes)] for name, enc, _ in models}
    heads["DSMN"].append(Classifier(dsmn.emb_dim, 3))  # scene-group head
    return [(name, enc, heads[name], n_mels) for name, enc, n_mels in models]


def recipe_complexity(hparams_file, overrides=None):
    """Complexity of the model of a recipe YAML, for one clip of ``train_duration`` seconds.

    Uses the YAML's ``compute_features`` to get the number of frames, its
    ``embedding_model`` and whichever of ``classifier`` / ``group_classifier``
    it defines; precision ``complexity_precision`` (default fp32).
    """
    import re

    import yaml
    from hyperpyyaml import load_hyperpyyaml

    with open(hparams_file, encoding="utf-8") as fin:
        text = fin.read()
    overrides = yaml.safe_load(overrides) if isinstance(overrides, str) else dict(overrides or {})
    # Placeholders (data folders ...) do not matter for the model: fill them.
    for key in re.findall(r"^(\w+):\s*!PLACEHOLDER", text, flags=re.M):
        overrides.setdefault(key, "unused")
    overrides.setdefault("prepare_data", None)  # the data module is not needed to build the model
    hparams = load_hyperpyyaml(text, overrides)
    n_samples = int(round(hparams["train_duration"] * hparams["sample_rate"]))
    feats = hparams["compute_features"](torch.zeros(1, n_samples))
    heads = [hparams[k] for k in ("classifier", "group_classifier") if hparams.get(k) is not None]
    result = complexity(
        hparams["embedding_model"], heads, feats.shape[1], feats.shape[2], hparams.get("complexity_precision", "fp32")
    )
    return feats.shape[1], feats.shape[2], result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hparams_file", nargs="?", help="recipe YAML whose model is measured")
    parser.add_argument("--collection", action="store_true", help="measure every model of soundcl")
    parser.add_argument("--overrides", default=None, help="YAML overrides for the recipe, e.g. '{n_mels: 64}'")
    args = parser.parse_args(argv)
    if not args.collection and not args.hparams_file:
        parser.error("give a hparams file or --collection")
    rows = []
    if args.hparams_file:
        n_frames, n_mels, res = recipe_complexity(args.hparams_file, args.overrides)
        rows.append((args.hparams_file, n_frames, n_mels, res))
    if args.collection:
        for name, enc, heads, n_mels in collection_models():
            rows.append((name, 101, n_mels, complexity(enc, heads, 101, n_mels)))
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
