"""The complexity counter: hand-counted toy net, grouped and dilated convs, CLI."""
import torch
import torch.nn as nn

from conftest import REPO_ROOT
from soundcl.ondevice import complexity


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


def test_collection_cli_measures_every_model(capsys):
    """``python -m soundcl.complexity --collection`` (a README command) runs, BC-ResNet included."""
    rows = complexity.main(["--collection"])
    names = [name for name, *_ in rows]
    assert names == ["small CNN (synth demo)", "CNN14", "ECAPA-TDNN", "DSMN", "BC-ResNet", "DCASE baseline CNN"]
    out = capsys.readouterr().out
    for name in names:
        assert f"| {name} |" in out
    bcresnet = rows[names.index("BC-ResNet")]
    assert bcresnet[2] == 64 and 8_000 <= bcresnet[3]["params"] <= 10_000  # BC-ResNet-1: ~9 k parameters
    assert all(res["macs"] > 0 for *_, res in rows)


def test_bcresnet_rejects_a_mel_count_its_subbands_do_not_divide():
    import pytest

    from soundcl.models.bcresnet import BCResNet

    with pytest.raises(ValueError, match=r"n_mels divisible by 8 \* n_subbands = 32, got n_mels=40"):
        BCResNet(n_mels=40)
    enc = BCResNet(n_mels=32, c=0.5)
    assert enc(torch.randn(2, 12, 32), torch.ones(2)).shape == (2, enc.emb_dim)
    with pytest.raises(ValueError, match="built for n_mels=32, got feats with 40 mel bins"):
        enc(torch.randn(2, 12, 40), torch.ones(2))


def _flop_counter_per_layer(model, *inputs):
    """FLOPs of torch.utils.flop_counter.FlopCounterMode per conv/linear layer (named as named_modules does)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    counts = counter.get_flop_counts()
    prefix = type(model).__name__
    per_layer = {
        name: sum(counts.get(f"{prefix}.{name}", {}).values())
        for name, mod in model.named_modules()
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    }
    return per_layer, counter.get_total_flops()


def test_macs_agree_with_torch_flop_counter_layer_by_layer():
    """FLOPs = 2 x MACs for every conv and linear layer of the toy nets and the small models of soundcl."""
    from soundcl.models.bcresnet import BaselineCNN, BCResNet
    from soundcl.models.dsmn import DSMN
    from soundcl.models.encoders import Classifier, CNNEncoder

    cases = [(ToyNet().eval(), (torch.zeros(3, 8, 6),))]
    for enc, n_mels in ((BCResNet(32, c=0.5), 32), (DSMN(64), 64), (BaselineCNN(), 40), (CNNEncoder(40, (8, 16), 32), 40)):
        model = complexity.EncoderWithHeads(enc, [Classifier(enc.emb_dim, 5)]).eval()
        cases.append((model, (torch.zeros(2, 40, n_mels), torch.ones(2))))
    for model, inputs in cases:
        total, per_layer = complexity.count_macs(model, *inputs)
        flops, total_flops = _flop_counter_per_layer(model, *inputs)
        batch = inputs[0].shape[0]
        assert {k: v for k, v in flops.items() if v} == {k: 2 * v * batch for k, v in per_layer.items()}, type(model)
        assert total_flops == 2 * total * batch  # these models have no other matmuls


def test_macs_leave_out_attention_products_that_the_flop_counter_counts():
    """Where the two must differ: a matmul outside nn.Linear (attention scores) is not a MAC of the DCASE convention."""

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v

    net = Attention().eval()
    x = torch.zeros(1, 10, 8)
    total, _ = complexity.count_macs(net, x)
    _, total_flops = _flop_counter_per_layer(net, x)
    assert total == 10 * 24 * 8
    assert total_flops == 2 * total + 2 * (10 * 10 * 8) * 2  # + q k^T and attn v
