"""Feature-domain augmentations (applied to [batch, time, n_mels] filterbanks in training)."""
import torch
import torch.nn as nn


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
