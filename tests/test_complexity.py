"""The complexity counter: hand-counted toy net, grouped and dilated convs, CLI."""
import torch
import torch.nn as nn

from conftest import REPO_ROOT
from soundcl import complexity


class ToyNet(nn.Module):
    """conv 1->4 (3x3, pad 1) -> grouped dilated conv 4->8 (3x3, dilation 2, groups 2) -> mean -> linear 8->5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.fc = nn.Linear(8, 5)

    def forward(self, feats, lens=None):
        x = self.grouped(torch.relu(self.conv(feats.unsqueeze(1))))  # [B, 8, T, F]
        return self.fc(x.mean(dim=(2, 3)))


def test_macs_and_params_match_a_hand_count():
    net = ToyNet()
    total, per_layer = complexity.count_macs(net, torch.zeros(3, 8, 6))
    # conv: 4 channels x 8 x 6 outputs x (1 x 9) products
    assert per_layer["conv"] == 4 * 8 * 6 * 9 == 1728
    # grouped: 8 x 8 x 6 outputs x (4 / 2 input channels x 9); dilation 2 with padding 2 keeps 8 x 6
    assert per_layer["grouped"] == 8 * 8 * 6 * 2 * 9 == 6912
    assert per_layer["fc"] == 5 * 8
    assert total == 1728 + 6912 + 40  # per clip, not per batch of 3
    assert complexity.count_params(net) == (4 * 9 + 4) + (8 * 2 * 9) + (8 * 5 + 5)


def test_strided_and_1d_convs_count_real_output_sizes():
    net = nn.Sequential(nn.Conv1d(2, 6, 5, stride=2, groups=2))  # [B, 2, 20] -> [B, 6, 8]
    total, _ = complexity.count_macs(net, torch.zeros(1, 2, 20))
    assert total == 6 * 8 * 1 * 5


def test_memory_and_dcase_verdict():
    assert complexity.param_bytes(1000, "int8") == 1000 and complexity.param_bytes(1000, "fp16") == 2000
    assert complexity.smallest_fitting_precision(30_000, 1e6) == "fp32"
    assert complexity.smallest_fitting_precision(45_000, 9e6) == "fp16"
    assert complexity.smallest_fitting_precision(120_000, 9e6) == "int8"
    assert complexity.smallest_fitting_precision(20_000, 31e6) is None


def test_recipe_cli_measures_the_dsmn_yaml(capsys):
    import os

    rows = complexity.main([os.path.join(REPO_ROOT, "hparams", "tau22", "dsmn_train.yaml")])
    _, n_frames, n_mels, res = rows[0]
    assert n_frames == 101 and n_mels == 128
    assert 42_800 <= res["params"] <= 47_400
    assert res["macs"] < complexity.DCASE2023_MAX_MACS
    assert "dsmn_train.yaml" in capsys.readouterr().out
