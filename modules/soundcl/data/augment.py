"""Time-frequency augmentation of filterbank features (the "views" of SSL training).

:class:`TimeFreqAugment` works on a batch of features [batch, time, n_mels] and
draws every random choice per example, so two copies of a clip in one batch get
independent augmentations. It uses the global torch RNG, which the task loop
reseeds from (seed, task, epoch): reruns draw the same augmentations.
"""
import torch
import torch.nn as nn


def _check_range(name, value):
    low, high = (int(v) for v in value)
    if low < 0 or high < low:
        raise ValueError(f"{name} must be [min, max] with 0 <= min <= max, got {value}")
    return low, high


class TimeFreqAugment(nn.Module):
    """Time warp, frequency masks, time masks, time roll and frequency shift.

    Arguments
    ---------
    enabled : bool
        False: the module returns its input unchanged.
    time_warp : bool
        Stretch the time axis around a random centre (SpecAugment time warp).
    time_warp_window : int
        Largest displacement of the warp centre, in frames.
    n_freq_mask : int
        Frequency masks per example.
    freq_mask_width : [int, int]
        Range (inclusive) of the width of a frequency mask, in mel bins.
    n_time_mask : int
        Time masks per example.
    time_mask_width : [int, int]
        Range (inclusive) of the width of a time mask, in frames.
    time_roll : bool
        Circularly shift each example in time by a random number of frames.
    freq_shift : int
        Shift each example by up to this many mel bins up or down, filling
        with ``mask_value`` (0: off).
    mask_value : float
        What masked or vacated cells hold (0 = the mean of normalised features).
    """

    def __init__(
        self,
        enabled=True,
        time_warp=True,
        time_warp_window=5,
        n_freq_mask=2,
        freq_mask_width=(0, 8),
        n_time_mask=2,
        time_mask_width=(0, 20),
        time_roll=False,
        freq_shift=0,
        mask_value=0.0,
    ):
        super().__init__()
        self.enabled = bool(enabled)
        self.time_warp = bool(time_warp)
        self.time_warp_window = int(time_warp_window)
        self.n_freq_mask = int(n_freq_mask)
        self.freq_mask_width = _check_range("freq_mask_width", freq_mask_width)
        self.n_time_mask = int(n_time_mask)
        self.time_mask_width = _check_range("time_mask_width", time_mask_width)
        self.time_roll = bool(time_roll)
        self.freq_shift = int(freq_shift)
        self.mask_value = float(mask_value)
        if self.n_freq_mask < 0 or self.n_time_mask < 0 or self.freq_shift < 0 or self.time_warp_window < 0:
            raise ValueError("mask counts, time_warp_window and freq_shift must be >= 0")

    def forward(self, feats):
        """feats [batch, time, n_mels] -> augmented feats, same shape and dtype."""
        if not self.enabled:
            return feats
        if feats.dim() != 3:
            raise ValueError(f"TimeFreqAugment expects [batch, time, n_mels] features, got shape {tuple(feats.shape)}")
        x = feats
        if self.time_warp and self.time_warp_window > 0:
            x = self._warp(x)
        if self.time_roll:
            x = self._roll_time(x)
        if self.freq_shift > 0:
            x = self._shift_freq(x)
        x = self._mask(x, dim=2, count=self.n_freq_mask, width=self.freq_mask_width)
        x = self._mask(x, dim=1, count=self.n_time_mask, width=self.time_mask_width)
        return x

    # ------------------------------------------------------------ pieces
    # Not speechbrain.augment.freq_domain.Warping: it draws one warp for the whole batch (SSL views need one each) and writes in place.
    def _warp(self, x):
        """Piecewise-linear time warp: frame ``c`` moves to ``c + w``, |w| <= window."""
        batch, n_frames, _ = x.shape
        window = min(self.time_warp_window, (n_frames - 1) // 2 - 1)
        if window < 1:
            return x
        device = x.device
        centre = torch.randint(window, n_frames - window, (batch,), device=device).float()
        shift = torch.randint(-window, window + 1, (batch,), device=device).float()
        new_centre = centre + shift
        out_t = torch.arange(n_frames, device=device).float()[None, :]  # [1, T]
        last = float(n_frames - 1)
        # Source frame of each output frame: linear on both sides of the centre.
        left = out_t * centre[:, None] / new_centre[:, None].clamp(min=1)
        right = centre[:, None] + (out_t - new_centre[:, None]) * (last - centre[:, None]) / (last - new_centre[:, None]).clamp(min=1)
        source = torch.where(out_t <= new_centre[:, None], left, right).clamp(0, last)  # [B, T]
        low = source.floor().long()
        high = (low + 1).clamp(max=n_frames - 1)
        frac = (source - low.float()).unsqueeze(-1).to(x.dtype)
        idx_low = low.unsqueeze(-1).expand(-1, -1, x.shape[2])
        idx_high = high.unsqueeze(-1).expand(-1, -1, x.shape[2])
        return x.gather(1, idx_low) * (1 - frac) + x.gather(1, idx_high) * frac

    # Not speechbrain.augment.freq_domain.RandomShift: it draws one shift for the whole batch.
    def _roll_time(self, x):
        batch, n_frames, _ = x.shape
        shift = torch.randint(0, n_frames, (batch, 1), device=x.device)
        idx = (torch.arange(n_frames, device=x.device)[None, :] - shift) % n_frames
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    def _shift_freq(self, x):
        batch, _, n_mels = x.shape
        shift = torch.randint(-self.freq_shift, self.freq_shift + 1, (batch, 1), device=x.device)
        source = torch.arange(n_mels, device=x.device)[None, :] - shift  # [B, F]
        valid = (source >= 0) & (source < n_mels)
        idx = source.clamp(0, n_mels - 1).unsqueeze(1).expand(-1, x.shape[1], -1)
        shifted = x.gather(2, idx)
        return shifted.masked_fill(~valid.unsqueeze(1), self.mask_value)

    # Not speechbrain.augment.freq_domain.SpectrogramDrop: it starts masks anywhere in [0, size) (cut short at the edge) and fills in place.
    def _mask(self, x, dim, count, width):
        """``count`` masks of width in ``width`` along ``dim`` (1: time, 2: freq), per example."""
        if count == 0 or width[1] == 0:
            return x
        batch, size = x.shape[0], x.shape[dim]
        high = min(width[1], size)
        widths = torch.randint(min(width[0], high), high + 1, (batch, count), device=x.device)
        starts = (torch.rand(batch, count, device=x.device) * (size - widths + 1).float()).long()
        pos = torch.arange(size, device=x.device)[None, None, :]  # [1, 1, size]
        masked = ((pos >= starts[..., None]) & (pos < (starts + widths)[..., None])).any(dim=1)  # [B, size]
        masked = masked.unsqueeze(2) if dim == 1 else masked.unsqueeze(1)
        return x.masked_fill(masked, self.mask_value)

    def extra_repr(self):
        return (
            f"enabled={self.enabled}, time_warp={self.time_warp}({self.time_warp_window}), "
            f"freq_masks={self.n_freq_mask}x{self.freq_mask_width}, time_masks={self.n_time_mask}x{self.time_mask_width}, "
            f"time_roll={self.time_roll}, freq_shift={self.freq_shift}"
        )


class FrequencyShift(nn.Module):
    """Shift each example's filterbank along the mel axis by a random number of bins.

    The "DIFF_FREQ" augmentation of the DSMN recipe: devices differ mostly in
    their frequency response, so shifting the spectrum by a few mel bins
    simulates unseen devices. Vacated bins repeat the edge bin.

    Arguments
    ---------
    max_shift : int
        Shifts are drawn uniformly from ``-max_shift .. max_shift`` bins.
    prob : float
        Probability that an example is shifted at all.
    """

    def __init__(self, max_shift=4, prob=0.5):
        super().__init__()
        self.max_shift = int(max_shift)
        self.prob = float(prob)

    # Not speechbrain.augment.freq_domain.RandomShift: one roll for the whole batch wraps bins around; here each example gets its own shift, edges repeated.
    def forward(self, feats):
        """feats [batch, time, n_mels] -> same shape."""
        if self.max_shift <= 0 or self.prob <= 0:
            return feats
        batch, _, n_mels = feats.shape
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (batch,), device=feats.device)
        shifts = shifts * (torch.rand(batch, device=feats.device) < self.prob)
        source = torch.arange(n_mels, device=feats.device)[None, :] - shifts[:, None]  # [batch, n_mels]
        source = source.clamp(0, n_mels - 1)
        return torch.gather(feats, 2, source[:, None, :].expand(-1, feats.shape[1], -1))
