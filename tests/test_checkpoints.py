"""A checkpoint whose writer was killed is never loaded."""
import torch

from soundcl.base.checkpoints import COMPLETE_MARKER, SafeCheckpointer


def test_half_written_checkpoint_is_ignored(tmp_path):
    layer = torch.nn.Linear(2, 2)
    checkpointer = SafeCheckpointer(tmp_path, recoverables={"layer": layer})
    with torch.no_grad():
        layer.weight.fill_(1.0)
    good = checkpointer.save_checkpoint(meta={"acc": 0.5})
    assert (good.path / COMPLETE_MARKER).exists()
    with torch.no_grad():
        layer.weight.fill_(2.0)
    newer = checkpointer.save_checkpoint(meta={"acc": 0.9})
    # Simulate a kill during the write: parameters truncated, no marker.
    (newer.path / COMPLETE_MARKER).unlink()
    (newer.path / "layer.ckpt").write_bytes(b"")
    with torch.no_grad():
        layer.weight.fill_(3.0)
    fresh = SafeCheckpointer(tmp_path, recoverables={"layer": layer})
    loaded = fresh.recover_if_possible(max_key="acc")
    assert loaded.path == good.path
    assert torch.all(layer.weight == 1.0)


def test_named_checkpoint_left_half_written_is_rewritten(tmp_path):
    layer = torch.nn.Linear(2, 2)
    checkpointer = SafeCheckpointer(tmp_path, recoverables={"layer": layer})
    stale = tmp_path / "CKPT+final"
    stale.mkdir()
    (stale / "CKPT.yaml").write_text("acc: 1.0\n")
    assert checkpointer.find_checkpoint() is None
    ckpt = checkpointer.save_checkpoint(name="final")
    assert ckpt.path == stale and (stale / "layer.ckpt").stat().st_size > 0
    assert checkpointer.find_checkpoint().path == stale
