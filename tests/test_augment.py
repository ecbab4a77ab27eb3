"""Time-frequency augmentation and the per-batch LR schedule of the SSL recipes."""
import math

import pytest
import torch

from soundcl.data.augment import TimeFreqAugment
from soundcl.core.schedulers import WarmupCosineLR


def _feats(batch=4, frames=100, n_mels=40):
    torch.manual_seed(0)
    return torch.randn(batch, frames, n_mels) + 5.0  # no cell is 0 before masking


def test_augmentation_keeps_shapes_and_is_random_across_calls():
    aug = TimeFreqAugment(time_roll=True, freq_shift=3)
    x = _feats()
    a, b = aug(x), aug(x)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert not torch.equal(a, b)
    assert not torch.equal(a, x)
    # Two copies of a clip in one batch get different augmentations.
    pair = aug(torch.cat([x[:1], x[:1]]))
    assert not torch.equal(pair[0], pair[1])
    # Every piece alone also draws per example, and the input is never modified in place.
    for piece in (
        dict(time_warp=True, time_warp_window=10, n_freq_mask=0, n_time_mask=0),
        dict(time_warp=False, n_freq_mask=0, n_time_mask=0, time_roll=True),
        dict(time_warp=False, n_freq_mask=0, n_time_mask=0, freq_shift=3),
        dict(time_warp=False, n_freq_mask=1, n_time_mask=0),
        dict(time_warp=False, n_freq_mask=0, n_time_mask=1),
    ):
        same = x[:1].repeat(8, 1, 1)
        out = TimeFreqAugment(**piece)(same)
        assert torch.equal(same, x[:1].repeat(8, 1, 1)), piece
        assert any(not torch.equal(out[0], out[i]) for i in range(1, 8)), piece


def test_augmentation_is_identity_when_switched_off():
    x = _feats()
    assert torch.equal(TimeFreqAugment(enabled=False, time_roll=True, freq_shift=3)(x), x)
    no_ops = TimeFreqAugment(time_warp=False, n_freq_mask=0, n_time_mask=0, time_roll=False, freq_shift=0)
    assert torch.equal(no_ops(x), x)


def test_masks_have_the_configured_widths():
    """Never cut short at the edge (64 examples: a mask start drawn in [0, size) would be cut in ~7% of them)."""
    x = _feats(batch=64)
    time_only = TimeFreqAugment(time_warp=False, n_freq_mask=0, n_time_mask=1, time_mask_width=[7, 7])
    zero_frames = (time_only(x) == 0).all(dim=2).sum(dim=1)
    assert zero_frames.tolist() == [7] * 64
    freq_only = TimeFreqAugment(time_warp=False, n_time_mask=0, n_freq_mask=1, freq_mask_width=[3, 3])
    zero_bins = (freq_only(x) == 0).all(dim=1).sum(dim=1)
    assert zero_bins.tolist() == [3] * 64


def test_time_roll_permutes_frames_and_time_warp_keeps_the_ends():
    x = _feats()
    rolled = TimeFreqAugment(time_warp=False, n_freq_mask=0, n_time_mask=0, time_roll=True)(x)
    torch.testing.assert_close(rolled.sort(dim=1).values, x.sort(dim=1).values)
    warped = TimeFreqAugment(time_warp=True, time_warp_window=10, n_freq_mask=0, n_time_mask=0)(x)
    torch.testing.assert_close(warped[:, 0], x[:, 0])
    torch.testing.assert_close(warped[:, -1], x[:, -1])


def test_bad_widths_are_rejected():
    with pytest.raises(ValueError, match="freq_mask_width"):
        TimeFreqAugment(freq_mask_width=[5, 2])


def test_warmup_cosine_schedule_and_constant_group():
    sched = WarmupCosineLR(base_lr=0.1, n_epochs=4, warmup_epochs=1, final_lr=0.0)
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "fixed_lr": True}], lr=0.1)
    lrs, fixed = [], []
    for _ in range(20):  # 5 steps per epoch
        lrs.append(sched(opt, steps_per_epoch=5))
        fixed.append(opt.param_groups[1]["lr"])
        assert opt.param_groups[0]["lr"] == lrs[-1]
    assert lrs[:5] == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08])
    assert lrs[5] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:]))
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert fixed == [0.1] * 20
    assert sched.n_steps == 20


def test_warmup_cosine_state_round_trips(tmp_path):
    sched = WarmupCosineLR(base_lr=0.1, n_epochs=2, warmup_epochs=0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for _ in range(3):
        sched(opt, 4)
    sched._save(tmp_path / "s.ckpt")
    fresh = WarmupCosineLR(base_lr=0.1, n_epochs=2, warmup_epochs=0)
    fresh._load(tmp_path / "s.ckpt")
    assert fresh(opt, 4) == pytest.approx(sched(opt, 4))
