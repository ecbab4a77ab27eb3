"""Memory policies: size, balance, duplicates, determinism, reservoir statistics,
herding on a hand-made example, vote uncertainty, cost of noisytune."""
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn

import speechbrain as sb

from soundcl.core.task_loop import MemoryContext
from soundcl.memory.policies import (
    AscclPrototypeMemory,
    ClassBalancedRandomMemory,
    PrototypeMemory,
    RandomMemory,
    ReservoirMemory,
    UncertaintyMemory,
    herding,
    FixedSizeMemory,
    NoMemory,
    perturbed_predictions,
)
from soundcl.memory.scores import evenly_spaced, stride_indices
from soundcl.memory.perturbations import EmbeddingNoise, Repeat, vote_uncertainty

N_MELS = 8


def _rows(task, classes, per_class):
    return [
        {"ID": f"t{task}_c{c}_{i}", "class_idx": c, "wav": "", "duration": 1.0, "label": str(c), "fold": 1}
        for c in classes for i in range(per_class)
    ]


class _CountingEncoder(nn.Module):
    """Mean of the features over time -> [batch, n_mels]; counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(N_MELS))

    def forward(self, feats, lens=None):
        self.calls += 1
        return feats.mean(dim=1) * self.scale


class _FakeBrain:
    """The parts of a ContinualFeatureBrain a memory policy touches.

    A clip's "waveform" is [class_idx + noise] * 16 samples; its features repeat
    the waveform over N_MELS bins, so embeddings cluster by class.
    """

    def __init__(self):
        self.device = torch.device("cpu")
        self.modules = nn.ModuleDict({"embedding_model": _CountingEncoder(), "classifier": nn.Linear(N_MELS, 10)})
        with torch.no_grad():
            # Class c scores highest for embeddings near c (a 1-D "template" head).
            centers = torch.arange(10, dtype=torch.float32)
            self.modules.classifier.weight.copy_(centers[:, None].repeat(1, N_MELS) / N_MELS * 2)
            self.modules.classifier.bias.copy_(-(centers**2))

    def compute_feats(self, wavs, lens, stage):
        return wavs.unsqueeze(-1).repeat(1, 1, N_MELS)


def _make_dataset(rows, train):
    data = {}
    for row in rows:
        seed = int(row["ID"].split("_")[-1]) + 100 * int(row["class_idx"])
        noise = np.random.RandomState(seed).uniform(-0.45, 0.45)
        data[row["ID"]] = {"sig": torch.full((16,), float(row["class_idx"]) + noise), "class_idx": row["class_idx"]}
    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    sb.dataio.dataset.set_output_keys([dataset], ["id", "sig", "class_idx"])
    return dataset


def _context(task_id, all_rows, seen, seed=0, brain=None):
    return MemoryContext(
        task_id, brain or _FakeBrain(), {r["ID"]: r for r in all_rows}, seen, _make_dataset,
        {"batch_size": 8}, np.random.RandomState(seed),
    )


def _run_tasks(policy, n_tasks=3, classes_per_task=2, per_class=10, seed=0, brain=None):
    """Feed tasks to a policy; return the memory after each task."""
    tasks = [_rows(t, range(t * classes_per_task, (t + 1) * classes_per_task), per_class) for t in range(n_tasks)]
    all_rows = [r for rows in tasks for r in rows]
    memory, memories = [], []
    brain = brain or _FakeBrain()
    for t, rows in enumerate(tasks):
        seen = list(range((t + 1) * classes_per_task))
        memory = policy.select(memory, rows, _context(t, all_rows, seen, seed=seed * 1000 + t, brain=brain))
        memories.append(list(memory))
    return memories, {r["ID"]: r for r in all_rows}


def _classes(memory, rows_by_id):
    return Counter(int(rows_by_id[i]["class_idx"]) for i in memory)


ALL_POLICIES = [
    lambda m: RandomMemory(m),
    lambda m: ReservoirMemory(m),
    lambda m: ClassBalancedRandomMemory(m),
    lambda m: PrototypeMemory(m),
    lambda m: AscclPrototypeMemory(m),
    lambda m: UncertaintyMemory(m, "noisytune", metric_k=4, noise_lambda=2.0, uncertainty_from_task=0),
    lambda m: UncertaintyMemory(m, "noisytune_embedding", metric_k=4, noise_lambda=2.0, uncertainty_from_task=0),
    lambda m: UncertaintyMemory(m, "noise", metric_k=3),
    lambda m: UncertaintyMemory(m, "shift", metric_k=2, uncertainty_from_task=0, sample_rate=16000),
    lambda m: UncertaintyMemory(m, "speed_roll", metric_k=2, uncertainty_from_task=0),
    lambda m: UncertaintyMemory(m, "mask", metric_k=2, uncertainty_from_task=0),
    lambda m: UncertaintyMemory(m, "combination", metric_k=3, uncertainty_from_task=0, sample_rate=16000),
]


@pytest.mark.parametrize("make", ALL_POLICIES)
def test_size_no_duplicates_and_determinism(make):
    memories, rows_by_id = _run_tasks(make(13))
    for t, memory in enumerate(memories):
        if isinstance(make(13), AscclPrototypeMemory):  # ASC-CL leaves the leftover slots empty
            assert len(memory) == 13 // (2 * (t + 1)) * (2 * (t + 1))
        else:
            assert len(memory) == 13  # 20 candidates or more per task: always full
        assert len(set(memory)) == len(memory)
        # Only clips seen so far.
        assert all(int(i.split("_")[0][1:]) <= t for i in memory)
    again, _ = _run_tasks(make(13))
    assert again == memories
    other, _ = _run_tasks(make(13), seed=7)
    if type(make(13)) is not PrototypeMemory:  # iCaRL herding has no randomness with 13 = 6*2+1
        assert other != memories


def test_memory_larger_than_the_candidates_keeps_everything():
    for make in ALL_POLICIES:
        memories, _ = _run_tasks(make(500), per_class=3)
        assert [len(m) for m in memories] == [6, 12, 18]


@pytest.mark.parametrize("make", ALL_POLICIES[2:])
def test_balanced_policies_keep_the_quota_of_every_class(make):
    memories, rows_by_id = _run_tasks(make(14), n_tasks=3, classes_per_task=2, per_class=10)
    for t, memory in enumerate(memories):
        counts = _classes(memory, rows_by_id)
        quota = 14 // (2 * (t + 1))
        assert set(counts) == set(range(2 * (t + 1)))
        assert all(quota <= n <= quota + 14 % (2 * (t + 1)) for n in counts.values()), counts


def test_balanced_policy_fills_slots_left_by_a_small_class():
    rows = _rows(0, [0], 2) + _rows(0, [1], 20)
    memory = ClassBalancedRandomMemory(10).select([], rows, _context(0, rows, [0, 1]))
    counts = _classes(memory, {r["ID"]: r for r in rows})
    assert counts == {0: 2, 1: 8}


def test_reservoir_gives_every_seen_clip_the_same_probability():
    # 3 tasks x 20 clips, memory 12: every clip should be kept with p = 12/60.
    n_runs, hits = 600, Counter()
    for seed in range(n_runs):
        memories, _ = _run_tasks(ReservoirMemory(12), n_tasks=3, classes_per_task=2, per_class=10, seed=seed)
        hits.update(memories[-1])
    freq = np.array([hits[r] for r in [f"t{t}_c{c}_{i}" for t in range(3) for c in (2 * t, 2 * t + 1) for i in range(10)]]) / n_runs
    expected = 12 / 60
    # Binomial std of one clip's frequency: sqrt(p(1-p)/n) ~ 0.016; 4.5 sigma bound.
    assert np.abs(freq - expected).max() < 0.075, freq
    # And the same per task (pooled: sharper test of early vs late clips).
    per_task = freq.reshape(3, 20).mean(axis=1)
    assert np.abs(per_task - expected).max() < 0.02, per_task
    # A plain uniform sample of the candidates would favour the last task.
    random_hits = Counter()
    for seed in range(200):
        memories, _ = _run_tasks(RandomMemory(12), n_tasks=3, classes_per_task=2, per_class=10, seed=seed)
        random_hits.update(i.split("_")[0] for i in memories[-1])
    assert random_hits["t2"] > 1.5 * random_hits["t0"]


def test_reservoir_counter_is_its_state():
    policy = ReservoirMemory(5)
    _run_tasks(policy, n_tasks=2, per_class=4)
    assert policy.state_dict() == {"n_seen": 16}
    restored = ReservoirMemory(5)
    restored.load_state_dict(policy.state_dict())
    assert restored.n_seen == 16


def test_herding_matches_a_hand_computation():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.0], [0.3, 0.1]])
    # Mean (0.5, 0.275).
    # Step 1, distance of each point to the mean: 0.571, 0.881, 0.340, 0.266 -> 3.
    # Step 2, mean of {3, p}: p0 (0.65, 0.05) 0.270; p1 (0.15, 0.55) 0.445; p2 (0.5, 0.05) 0.225 -> 2.
    # Step 3, mean of {3, 2, p}: p0 (0.667, 0.033) 0.294; p1 (0.333, 0.367) 0.190 -> 1
    # (a nearest-to-the-mean ranking would take 0 here).
    assert herding(points, 3) == [3, 2, 1]
    assert herding(points, 10) == [3, 2, 1, 0]


def test_prototype_memory_keeps_the_clips_nearest_the_class_mean():
    # Class 0 embeddings (after L2 norm) point in directions 0..89 degrees: the mean is at 45.
    angles = np.deg2rad(np.arange(0, 90, 10.0))  # 9 clips
    rows = _rows(0, [0], 9) + _rows(0, [1], 9)
    embs = {f"t0_c0_{i}": (np.cos(a), np.sin(a)) for i, a in enumerate(angles)}
    embs.update({f"t0_c1_{i}": (-1.0, 0.1 * i) for i in range(9)})

    brain = _FakeBrain()
    policy = PrototypeMemory(2)
    import soundcl.memory.policies as memory_module

    original = memory_module.compute_embeddings
    memory_module.compute_embeddings = lambda ids, context: torch.tensor([embs[i] for i in ids], dtype=torch.float32)
    try:
        memory = policy.select([], rows, _context(0, rows, [0, 1], brain=brain))
    finally:
        memory_module.compute_embeddings = original
    # One per class; class 0's pick is the 40 or 50 degree clip (closest to 45).
    assert "t0_c0_4" in memory or "t0_c0_5" in memory
    assert sum(i.startswith("t0_c0") for i in memory) == 1


def test_vote_uncertainty_bounds():
    k = 4
    agree = torch.tensor([[3, 3, 3, 3]])
    assert vote_uncertainty(agree).item() == 0.0
    all_differ = torch.tensor([[0, 1, 2, 3]])
    assert vote_uncertainty(all_differ).item() == pytest.approx(1 - 1 / k)
    mixed = torch.tensor([[1, 2, 1, 1], [5, 5, 2, 2]])
    assert vote_uncertainty(mixed).tolist() == pytest.approx([0.25, 0.5])
    random = torch.randint(0, 10, (500, k), generator=torch.Generator().manual_seed(0))
    scores = vote_uncertainty(random)
    assert scores.min() >= 0 and scores.max() <= 1 - 1 / k + 1e-6


def test_uncertainty_is_zero_without_noise_and_grows_near_the_boundary():
    rows = _rows(0, [0, 1], 8)
    brain = _FakeBrain()
    context = _context(0, rows, [0, 1], brain=brain)
    ids = [r["ID"] for r in rows]
    gen = torch.Generator().manual_seed(0)
    no_noise = perturbed_predictions(ids, context, Repeat(EmbeddingNoise(0.0)), 5, gen)
    assert vote_uncertainty(no_noise).max() == 0
    # Clean predictions are the classes: the head works.
    assert (no_noise[:, 0] == torch.tensor([r["class_idx"] for r in rows])).all()


def test_noisytune_runs_the_encoder_once_per_batch():
    rows = _rows(0, [0, 1], 10)  # 20 clips, batches of 8 -> 3 batches
    brain = _FakeBrain()
    context = _context(0, rows, [0, 1], brain=brain)
    ids = [r["ID"] for r in rows]
    perturbed_predictions(ids, context, Repeat(EmbeddingNoise(0.5)), 7, torch.Generator().manual_seed(0))
    assert brain.modules.embedding_model.calls == 3
    brain.modules.embedding_model.calls = 0
    policy = UncertaintyMemory(6, "noise", metric_k=4, uncertainty_from_task=0)
    policy.select([], rows, _context(0, rows, [0, 1], brain=brain))
    assert brain.modules.embedding_model.calls == 3 * 4  # waveform noise: k full passes


def test_uncertainty_memory_spans_easy_and_hard_clips():
    rows = _rows(0, [0], 12) + _rows(0, [1], 12)
    brain = _FakeBrain()
    policy = UncertaintyMemory(8, "noisytune", metric_k=8, noise_lambda=3.0, uncertainty_from_task=0)
    context = _context(0, rows, [0, 1], brain=brain)
    scores = policy.scores([r["ID"] for r in rows], _context(0, rows, [0, 1], brain=brain)).numpy()
    memory = policy.select([], rows, context)
    by_id = dict(zip([r["ID"] for r in rows], scores))
    for c in (0, 1):
        kept = sorted(by_id[i] for i in memory if i.startswith(f"t0_c{c}"))
        allc = sorted(v for i, v in by_id.items() if i.startswith(f"t0_c{c}"))
        assert len(kept) == 4
        assert kept[0] == allc[0]  # the most certain clip is kept ...
        assert kept[-1] >= np.median(allc)  # ... and uncertain ones too


def test_evenly_spaced():
    assert evenly_spaced(10, 4) == [0, 2, 5, 7]
    assert evenly_spaced(3, 5) == [0, 1, 2]
    assert evenly_spaced(5, 0) == []


def test_stride_indices_are_asccl_slice():
    # ASC-CL: ranked[::n // q][:q]
    for n, q in [(10, 4), (7, 3), (100, 7), (9, 9), (3, 5), (50, 1)]:
        expected = list(range(n))[::max(1, n // q)][:q] if n > q else list(range(n))
        assert stride_indices(n, q) == expected, (n, q)
    assert stride_indices(10, 4) == [0, 2, 4, 6]  # evenly_spaced would give [0, 2, 5, 7]


def _replay_hparams(**values):
    hparams = dict(mode="replay", mem_manage="random", memory_size=10, uncert_metric="noisytune", metric_k=4,
                   noise_lambda=0.1, uncertainty_from_task=1, sample_rate=16000)
    hparams.update(values)
    return hparams


def test_factory():
    assert isinstance(FixedSizeMemory.from_hparams(_replay_hparams(mode="finetune", mem_manage="uncertainty")), NoMemory)
    assert isinstance(FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="reservoir")), ReservoirMemory)
    assert isinstance(FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="balanced_random")),
                      ClassBalancedRandomMemory)
    policy = FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="uncertainty", uncert_metric="shift", metric_k=6))
    assert isinstance(policy, UncertaintyMemory) and policy.metric_k == 6
    # ASC-CL alternates k/2 pitch shifts and k/2 time shifts: an odd k is refused.
    with pytest.raises(ValueError, match="metric_k=3"):
        FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="uncertainty", uncert_metric="shift", metric_k=3))
    assert isinstance(FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="prototype")), AscclPrototypeMemory)
    assert type(FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="prototype_herding"))) is PrototypeMemory
    with pytest.raises(ValueError, match="mem_manage='herd'"):
        FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="herd"))
    with pytest.raises(ValueError, match="uncert_metric"):
        FixedSizeMemory.from_hparams(_replay_hparams(mem_manage="uncertainty", uncert_metric="blur"))
    with pytest.raises(ValueError, match="memory_size"):
        RandomMemory(-1)


def test_asccl_prototype_keeps_old_exemplars_at_random_and_fixes_class_means():
    """ASC-CL's prototype: old classes keep a random subset of their memory clips (no
    re-herding: their embeddings are never computed again), new classes are herded towards
    a class mean fixed when first seen (the policy's state), leftover slots stay empty."""
    import soundcl.memory.policies as memory_module

    embedded = []
    original = memory_module.compute_embeddings

    def fake_embeddings(ids, context):
        embedded.extend(ids)
        return original(ids, context)

    memory_module.compute_embeddings = fake_embeddings
    try:
        policy = AscclPrototypeMemory(9)
        memories, rows_by_id = _run_tasks(policy, n_tasks=2, classes_per_task=2, per_class=10)
    finally:
        memory_module.compute_embeddings = original
    first, second = memories
    assert len(first) == 8 and len(second) == 8  # 9 // 2 * 2 and 9 // 4 * 4: leftover slots empty
    assert set(second) - {i for i in second if i.startswith("t1_")} <= set(first)  # old = subset of memory
    assert not any(i.startswith("t0_") for i in embedded[20:])  # task 1 embeds only its new clips
    assert sorted(policy.state_dict()["class_means"]) == ["0", "1", "2", "3"]
    restored = AscclPrototypeMemory(9)
    restored.load_state_dict(policy.state_dict())
    assert restored.class_means == policy.class_means


def test_normalised_herding_follows_the_normalised_running_mean():
    from soundcl.memory.policies import normalised_herding

    angles = np.deg2rad([0.0, 40.0, 70.0, 90.0])
    points = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1))
    target = torch.nn.functional.normalize(points.mean(0), dim=0)  # 50.8 degrees
    # 40 is nearest; {40, 70} has direction 55 (vs 65 with 90); {40, 70, 0}: 36.9 (vs 66.8 with 90).
    assert normalised_herding(points, target, 2) == [1, 2]
    assert normalised_herding(points, target, 9) == [1, 2, 0, 3]
