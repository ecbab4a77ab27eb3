"""The training objectives of soundcl.core.losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from soundcl.core.losses import alignment_uniformity, embedding_spread, mixup_cross_entropy, negative_cosine, nt_xent, simsiam_loss


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



def test_nt_xent_of_random_embeddings_is_log_of_2n_minus_1():
    # In high dimension random directions are nearly orthogonal: every one of the
    # 2N - 1 candidates gets the same score, so each anchor's loss is ln(2N - 1).
    torch.manual_seed(0)
    for batch in (4, 16, 64):
        z1, z2 = torch.randn(batch, 8192), torch.randn(batch, 8192)
        assert nt_xent(z1, z2, tau=0.5).item() == pytest.approx(math.log(2 * batch - 1), abs=0.01)


def _nt_xent_reference(z1, z2, tau):
    """NT-Xent written anchor by anchor from the SimCLR paper's l(i, j) (no masked matrix)."""
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    terms = []
    for i in range(n):
        positive = (i + n // 2) % n
        others = torch.stack([z[i] @ z[k] / tau for k in range(n) if k != i])
        terms.append(torch.logsumexp(others, dim=0) - z[i] @ z[positive] / tau)
    return torch.stack(terms).mean()


def test_nt_xent_gradient_equals_an_independent_formulation():
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = nt_xent(a1, a2, tau=0.2)
    reference = _nt_xent_reference(b1, b2, 0.2)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)  # nt_xent computes in float32
    loss.backward()
    reference.backward()
    assert torch.allclose(a1.grad.double(), b1.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(a2.grad.double(), b2.grad, rtol=1e-4, atol=1e-6)
    assert a1.grad.abs().max() > 1e-3  # a gradient, not zeros on both sides


def test_simsiam_loss_floor_is_reached_by_a_collapsed_solution_that_spread_flags():
    # -1 is SimSiam's floor and a collapsed encoder reaches it too: the loss cannot
    # tell collapse from success, the per-dimension std of normalised embeddings can.
    torch.manual_seed(0)
    constant = torch.randn(1, 32).expand(64, 32)
    assert simsiam_loss(constant, constant, constant, constant).item() == pytest.approx(-1.0, abs=1e-6)
    assert embedding_spread(constant) == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(64, 32)
    assert simsiam_loss(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert embedding_spread(z) == pytest.approx(1 / math.sqrt(32), rel=0.15)


def test_alignment_and_uniformity_known_answers():
    torch.manual_seed(0)
    x = torch.randn(256, 4096)
    # Identical views: alignment 0; random directions: uniformity -2t + 2t^2/dim.
    same = alignment_uniformity(torch.cat([x, 3 * x]))
    assert same["align"] == pytest.approx(0.0, abs=1e-5)
    assert same["uniform"] == pytest.approx(-4.0 + 8.0 / 4096, abs=0.01)
    # Independent views: alignment 2 (squared distance of orthogonal unit vectors).
    assert alignment_uniformity(torch.cat([x, torch.randn(256, 4096)]))["align"] == pytest.approx(2.0, abs=0.01)
    # Opposite views: alignment 4; two clips at opposite points: uniformity -4t = -8.
    pair = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert alignment_uniformity(pair)["align"] == pytest.approx(4.0)
    assert alignment_uniformity(pair)["uniform"] == pytest.approx(-8.0)
    assert alignment_uniformity(pair, t=1.0)["uniform"] == pytest.approx(-4.0)
    # Collapse: every row one point, alignment 0 and uniformity 0 (the worst).
    collapsed = alignment_uniformity(torch.ones(8, 3))
    assert collapsed["align"] == pytest.approx(0.0, abs=1e-6) and collapsed["uniform"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="2 \\* batch"):
        alignment_uniformity(torch.randn(3, 4))
    with pytest.raises(ValueError, match="batch >= 2"):
        alignment_uniformity(torch.randn(2, 4))
