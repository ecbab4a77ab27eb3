"""DSMN: size, shapes, padding invariance, grouped heads."""
import pytest
import torch

from soundcl.complexity import count_params
from soundcl.models.dsmn import DSMN, GROUP_NAMES, TAU22_SCENE_GROUPS
from soundcl.models.encoders import Classifier


def test_published_size_45k_parameters():
    encoder = DSMN(n_mels=128)
    total = count_params(encoder, Classifier(encoder.emb_dim, 10), Classifier(encoder.emb_dim, 3))
    assert abs(total - 45_100) <= 0.05 * 45_100, total


@pytest.mark.parametrize("n_mels", [40, 33, 128])
def test_embedding_shape_and_odd_sizes(n_mels):
    torch.manual_seed(0)
    encoder = DSMN(n_mels=n_mels).eval()
    emb = encoder(torch.randn(3, 37, n_mels), torch.tensor([1.0, 0.6, 0.3]))
    assert emb.shape == (3, 100) and torch.isfinite(emb).all()


def test_scene_groups_cover_the_tau22_scenes():
    assert len(TAU22_SCENE_GROUPS) == 10
    assert set(TAU22_SCENE_GROUPS.values()) == set(GROUP_NAMES)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="n_pooled"):
        DSMN(channels=(8, 16), n_pooled=3)
