"""What the memory policies measure on candidate clips: embeddings, plain and
perturbed predictions (batched, under ``torch.no_grad()``, with the Brain's
modules in eval mode), herding and evenly spaced picks.
"""
import torch

import speechbrain as sb

from soundcl.memory.perturbations import EMBEDDING, FEATURE_MAP, FEATURES, WAVEFORM


class _EvalMode:
    """Modules of ``brain`` in eval mode under no_grad; training flags restored on exit."""

    def __init__(self, brain):
        self.brain = brain

    def __enter__(self):
        self.flags = {name: m.training for name, m in self.brain.modules.items()}
        self.brain.modules.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        return self

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        for name, module in self.brain.modules.items():
            module.train(self.flags[name])


def _batches(ids, context):
    """Yield (ids, wavs [B, samples] on the brain's device, relative lens [B])."""
    rows = [context.rows_by_id[i] for i in ids]
    loader_kwargs = dict(context.loader_kwargs)
    loader_kwargs["shuffle"] = False
    loader = sb.dataio.dataloader.make_dataloader(context.make_dataset(rows, train=False), **loader_kwargs)
    device = context.brain.device
    for batch in loader:
        wavs, lens = batch.sig
        yield batch.id, wavs.to(device), lens.to(device)


def _features(brain, wavs, lens):
    return brain.compute_feats(wavs, lens, sb.Stage.TEST)


def _masked_logits(brain, emb, seen_classes):
    logits = brain.modules.classifier(emb)
    mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    mask[list(seen_classes)] = True
    return logits.masked_fill(~mask, float("-inf"))


def _in_order(ids, out_ids, values):
    """Reorder per-batch results to the order of ``ids``."""
    position = {clip_id: pos for pos, clip_id in enumerate(out_ids)}
    return values[torch.as_tensor([position[i] for i in ids], dtype=torch.long)]


def compute_embeddings(ids, context):
    """One encoder pass over the clips: embeddings [len(ids), emb_dim] (CPU, float32)."""
    brain = context.brain
    out_ids, embs = [], []
    with _EvalMode(brain):
        for batch_ids, wavs, lens in _batches(ids, context):
            embs.append(brain.modules.embedding_model(_features(brain, wavs, lens), lens).float().cpu())
            out_ids.extend(batch_ids)
    return _in_order(ids, out_ids, torch.cat(embs)) if embs else torch.zeros(0)


def plain_predictions(ids, context):
    """One forward pass: predicted class per clip, LongTensor [len(ids)]."""
    brain = context.brain
    out_ids, preds = [], []
    with _EvalMode(brain):
        for batch_ids, wavs, lens in _batches(ids, context):
            emb = brain.modules.embedding_model(_features(brain, wavs, lens), lens)
            preds.append(_masked_logits(brain, emb, context.seen_classes).argmax(-1).cpu())
            out_ids.extend(batch_ids)
    return _in_order(ids, out_ids, torch.cat(preds)) if preds else torch.zeros(0, dtype=torch.long)


def perturbed_predictions(ids, context, perturbation, k, generator):
    """k perturbed predictions per clip: LongTensor [len(ids), k].

    ``perturbation`` is a draw schedule (:func:`soundcl.memory.perturbations.make_perturbation`):
    its ``schedule(k, generator)`` names the perturbation of each draw, once for
    all the clips. Each batch pays only for what a draw needs: a waveform
    perturbation re-runs front end, encoder and head; a feature one runs the front
    end once; a feature-map one (noisytune) runs the encoder up to its map once and
    pooling + head per draw; an embedding one runs the encoder once and the head per draw.
    """
    if k < 1:
        raise ValueError(f"metric_k must be >= 1, got {k}")
    draws = perturbation.schedule(k, generator)
    brain = context.brain
    encoder = brain.modules.embedding_model
    has_map = hasattr(encoder, "feature_map") and hasattr(encoder, "pool")
    out_ids, preds = [], []
    with _EvalMode(brain):
        for batch_ids, wavs, lens in _batches(ids, context):
            feats = emb = fmap = None
            batch_preds = []
            for draw in draws:
                if draw.level == WAVEFORM:
                    logits_emb = encoder(_features(brain, draw(wavs, generator, lens), lens), lens)
                elif draw.level == FEATURES:
                    feats = _features(brain, wavs, lens) if feats is None else feats
                    logits_emb = encoder(draw(feats, generator, lens), lens)
                elif draw.level == FEATURE_MAP:
                    if fmap is None:
                        feats = _features(brain, wavs, lens) if feats is None else feats
                        # Encoders without a map: the classifier's input is the map.
                        fmap = encoder.feature_map(feats, lens) if has_map else encoder(feats, lens)
                    noisy = draw(fmap, generator, lens)
                    logits_emb = encoder.pool(noisy, lens) if has_map else noisy
                elif draw.level == EMBEDDING:
                    if emb is None:
                        feats = _features(brain, wavs, lens) if feats is None else feats
                        emb = encoder(feats, lens)
                    logits_emb = draw(emb, generator, lens)
                else:
                    raise ValueError(f"perturbation {draw!r} has unknown level {draw.level!r}")
                batch_preds.append(_masked_logits(brain, logits_emb, context.seen_classes).argmax(-1).cpu())
            preds.append(torch.stack(batch_preds, dim=1))
            out_ids.extend(batch_ids)
    return _in_order(ids, out_ids, torch.cat(preds)) if preds else torch.zeros(0, k, dtype=torch.long)


def herding(features, n_select, target=None, normalise_mean=False):
    """Herding: indices of ``n_select`` rows whose running mean tracks ``target``.

    features : [n, dim] (already L2-normalised) -> list of ``min(n_select, n)``
    distinct row indices, in the order picked. Step i picks the row that brings
    the mean of the i rows picked so far closest (L2) to ``target`` [dim] (default:
    the mean of all rows, iCaRL); ``normalise_mean`` L2-normalises that running mean
    first (ASC-CL, :func:`soundcl.memory.policies.normalised_herding`). Ties go to the lowest index.
    """
    features = torch.as_tensor(features, dtype=torch.float64)
    n = features.shape[0]
    target = features.mean(dim=0) if target is None else torch.as_tensor(target, dtype=torch.float64)
    running = torch.zeros_like(target)
    available = torch.ones(n, dtype=torch.bool)
    picked = []
    for i in range(1, min(n_select, n) + 1):
        means = (running[None, :] + features) / i
        if normalise_mean:
            means = torch.nn.functional.normalize(means, dim=1)
        distances = torch.linalg.vector_norm(target[None, :] - means, dim=1)
        distances[~available] = float("inf")
        j = int(torch.argmin(distances))
        picked.append(j)
        running += features[j]
        available[j] = False
    return picked


def evenly_spaced(n_items, n_select):
    """``n_select`` distinct indices spread over ``range(n_items)``, first one included
    (``i * n_items // n_select``; soundcl's earlier uncertainty spacing)."""
    n_select = min(n_select, n_items)
    return [int(i * n_items // n_select) for i in range(n_select)]


def stride_indices(n_items, n_select):
    """ASC-CL's picks along a ranking: every ``n_items // n_select``-th index from 0, at
    most ``n_select`` of them (``ranked[::n // q][:q]``); all of them when ``n_items <= n_select``."""
    if n_items <= n_select:
        return list(range(n_items))
    if n_select <= 0:
        return []
    return list(range(0, n_items, n_items // n_select))[:n_select]
