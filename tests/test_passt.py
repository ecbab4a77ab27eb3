"""PaSST (soundcl.models.passt): front end, tiny model, local checkpoints, SIT on the miniatures.

Needs the ``passt`` extra (part of the ``test`` extra): skipped where hear21passt
is absent, a failure under CI.
"""
import importlib.util
import os
import sys

import pytest
import torch

from conftest import REPO_ROOT, under_ci
from soundcl.models import passt


def _require_hear21passt():
    if importlib.util.find_spec("hear21passt") is None:
        if under_ci():
            pytest.fail("hear21passt not installed (CI=true: pip install -e \".[test]\" includes the passt extra)",
                        pytrace=False)
        pytest.skip("hear21passt not installed (pip install -e \".[passt]\")")
    return passt.import_hear21passt()


TINY = dict(depth=1, embed_dim=32, num_heads=2, n_mels=128, input_tdim=198)


def test_front_end_is_hear21passts():
    """Same log-mels as hear21passt's AugmentMelSTFT (eval), 10 ms frames at 32 kHz."""
    import contextlib
    import io

    _require_hear21passt()
    from hear21passt.models.preprocess import AugmentMelSTFT

    with contextlib.redirect_stdout(io.StringIO()):
        reference = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024).eval()
    wavs = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    ours = passt.PaSSTFrontEnd().eval()(wavs)
    assert ours.shape == (2, 100, 128)
    assert torch.allclose(ours, reference(wavs).transpose(1, 2), atol=1e-4)


def _hear21passt_model(n_classes, seed):
    """A tiny hear21passt PaSST with its own head, as a released checkpoint would hold it."""
    hp = _require_hear21passt()
    torch.manual_seed(seed)
    return hp.PaSST(img_size=(128, 198), patch_size=16, stride=(10, 10), in_chans=1, num_classes=n_classes,
                    embed_dim=32, depth=1, num_heads=2, distilled=True).eval()


def test_local_checkpoint_loads_and_a_different_head_is_dropped(tmp_path):
    source = _hear21passt_model(n_classes=7, seed=1)
    with torch.no_grad():  # hear21passt zero-initialises its heads: give them values to compare
        source.head[1].weight.normal_()
        source.head[1].bias.normal_()
    path = tmp_path / "passt.pt"
    torch.save({"model": source.state_dict()}, path)

    encoder = passt.PaSST(**TINY, pretrained_path=str(path)).eval()
    same_head = passt.PaSSTClassifier(32, 7, pretrained_path=str(path))
    other_head = passt.PaSSTClassifier(32, 3, pretrained_path=str(path))
    assert same_head.head_loaded and not other_head.head_loaded
    feats = torch.randn(2, 150, 128)
    with torch.no_grad():
        expected, _ = source(feats.transpose(1, 2).unsqueeze(1))
        # encoder + classifier = the checkpoint's model, head included.
        assert torch.allclose(same_head(encoder(feats)), expected, atol=1e-5)
        assert other_head(encoder(feats)).shape == (2, 3)


def test_missing_or_mismatched_checkpoint_is_one_clear_error(tmp_path):
    _require_hear21passt()
    with pytest.raises(FileNotFoundError) as error:
        passt.PaSST(**TINY, pretrained_path=str(tmp_path / "absent.pt"))
    message = str(error.value)
    assert "\n" not in message and "absent.pt" in message and "never downloaded" in message
    assert passt.RELEASE_URLS["passt_s_swa_p16_128_ap476"] in message
    path = tmp_path / "wide.pt"
    torch.save(passt.PaSST(depth=1, embed_dim=64, num_heads=2, n_mels=128, input_tdim=198).net.state_dict(), path)
    with pytest.raises(ValueError, match="does not match"):
        passt.PaSST(**TINY, pretrained_path=str(path))


def test_structured_patchout_and_sizes():
    _require_hear21passt()
    model = passt.PaSST(**TINY, s_patchout_t=3, s_patchout_f=4)
    seen = []
    model.net.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(out.shape[1]))
    feats = torch.randn(2, 100, 128)  # 12 x 9 patches
    model.train()(feats)
    model.eval()(feats)
    assert seen == [2 + (12 - 4) * (9 - 3), 2 + 12 * 9]  # tokens: class + distillation + patches kept
    with pytest.raises(ValueError, match="s_patchout_t"):
        model.train()(torch.randn(2, 40, 128))  # 3 time patches, all dropped
    with pytest.raises(ValueError, match="frames"):
        model.eval()(torch.randn(2, 8, 128))
    with pytest.raises(ValueError, match="together"):
        passt.PaSST(depth=1)


def test_missing_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "hear21passt", None)
    monkeypatch.setitem(sys.modules, "hear21passt.models", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[passt\]"'):
        passt.PaSST(**TINY)


def test_published_size_builds_offline():
    _require_hear21passt()
    model = passt.PaSST()  # passt_s_swa_p16_128_ap476, random weights
    assert 85.0e6 < sum(p.numel() for p in model.parameters()) < 85.5e6
    assert model.emb_dim == 768 and model.grid == (12, 99)


def _relative_change(before, after):
    keys = [k for k, v in before.items() if v.is_floating_point()]
    diff = sum(float((after[k] - before[k]).pow(2).sum()) for k in keys)
    return (diff / sum(float(before[k].pow(2).sum()) for k in keys)) ** 0.5


def test_sit_on_tiny_passt_starts_from_the_checkpoint_and_learns_slowly(tmp_path):
    """CochlScene -> TAU 2022 miniatures, the YAML's PaSST (tiny) from a local checkpoint: the
    backbone starts from it and moves at backbone_lr only; each stage's head is its own."""
    from conftest import run_recipe
    from soundcl.testing.miniatures import make_cochl, make_tau22

    _require_hear21passt()
    source = _hear21passt_model(n_classes=527, seed=3)
    path = tmp_path / "audioset.pt"
    torch.save(source.state_dict(), path)
    cochl = make_cochl(str(tmp_path / "CochlScene"), n_classes=13, clips_per_class=1)
    tau22 = make_tau22(str(tmp_path / "TAU22"), train_clips_per_class=2, test_clips_per_class=1)
    results = run_recipe("sit_train", [
        os.path.join(REPO_ROOT, "hparams", "tau22", "sit_train.yaml"), f"--output_base={tmp_path}",
        f"--cochl_folder={cochl}", f"--tau22_folder={tau22}", f"--passt_pretrained_path={path}",
        "--passt_depth=1", "--passt_embed_dim=32", "--passt_heads=2", "--passt_input_tdim=198",
        "--number_of_epochs=1", "--batch_size=8", "--noprogressbar",
        "--train_dataloader_opts={batch_size: 8, shuffle: True, num_workers: 0}",
        "--eval_dataloader_opts={batch_size: 8, num_workers: 0}",
    ])
    out = tmp_path / "sit_subset100_blr0.0001" / "1986" / "save"
    pretrained = {k: v for k, v in source.state_dict().items() if not k.startswith(("head.1", "head_dist"))}
    backbones = [{k[len("net."):]: v for k, v in torch.load(out / f"stage{s}" / "CKPT+final" / "embedding_model.ckpt").items()}
                 for s in (0, 1)]
    # Adam at 1e-4 for a couple of steps per stage: well under 10 % away from the checkpoint.
    assert 0 < _relative_change(pretrained, backbones[0]) < 0.1
    assert 0 < _relative_change(backbones[0], backbones[1]) < 0.1
    heads = [torch.load(out / f"stage{s}" / "CKPT+final" / "classifier.ckpt") for s in (0, 1)]
    assert _relative_change(heads[0], heads[1]) > 0.5  # re-initialised for TAU's label set
    assert results["sit"]["backbone_lr"] == 0.0001 and len(results["sit"]["stage_accuracy"]) == 2
