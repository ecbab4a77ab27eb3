"""The training objectives of soundcl.core.losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from soundcl.core.losses import embedding_spread, mixup_cross_entropy, negative_cosine, nt_xent, simsiam_loss


def test_nt_xent_equals_the_hand_computed_value_on_two_pairs():
    # Orthogonal clips, identical views: every anchor has cosine 1 to its
    # positive and 0 to its two negatives, so each term is
    # -log(e^(1/tau) / (e^(1/tau) + 2 e^0)) = log(1 + 2 e^(-1/tau)).
    z1 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # not unit length: nt_xent normalises
    z2 = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    assert nt_xent(z1, z2, tau=0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-6)
    # Views at 90 degrees: anchors a0=(1,0), a1=(0,1) (view 1), a2=(0,1), a3=(-1,0) (view 2).
    # Every positive has cosine 0. a0 and a3 have negatives at cosines {0, -1},
    # a1 and a2 at {0, +1}: terms log(2 + e^(-2)) and log(2 + e^2) with tau 0.5.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = 0.5 * (math.log(2 + math.exp(-2.0)) + math.log(2 + math.exp(2.0)))
    assert nt_xent(z1, z2, tau=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_matches_a_loop_implementation_and_is_symmetric_in_the_views():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(10):
        positive = (i + 5) % 10
        denom = sum(math.exp(float(z[i] @ z[j]) / 0.3) for j in range(10) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[positive]) / 0.3) / denom)
    assert nt_xent(z1, z2, tau=0.3).item() == pytest.approx(total / 10, rel=1e-5)
    assert nt_xent(z2, z1, tau=0.3).item() == pytest.approx(nt_xent(z1, z2, tau=0.3).item(), rel=1e-6)


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="shape"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 5))


def test_simsiam_loss_has_no_gradient_through_the_stop_gradient_branch():
    torch.manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(4, 8, requires_grad=True) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    loss.backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    # Aligned predictions reach the minimum -1.
    z = torch.randn(4, 8)
    assert simsiam_loss(2 * z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine(z, -z).item() == pytest.approx(1.0, abs=1e-6)


def test_embedding_spread_is_zero_for_collapse_and_about_one_over_sqrt_dim_otherwise():
    torch.manual_seed(0)
    collapsed = torch.ones(64, 16) * torch.randn(1, 16)
    assert embedding_spread(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert embedding_spread(torch.randn(4096, 16)) == pytest.approx(1 / math.sqrt(16), rel=0.05)


def test_mixup_cross_entropy_mixes_the_two_targets():
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 0, 3, 2])
    assert mixup_cross_entropy(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item())
    expected = 0.7 * F.cross_entropy(logits, targets) + 0.3 * F.cross_entropy(logits, targets[perm])
    assert mixup_cross_entropy(logits, targets, perm, 0.7).item() == pytest.approx(expected.item())
