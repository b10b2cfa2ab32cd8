"""FGSM against its formula, and the ε search (Definitions 7–9)."""
import pytest
import torch
from torch import nn

from fragility import FragilityError, fgsm, search_epsilon
from fragility.attacks import accuracy


def test_fgsm_equals_its_formula_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 1, 0])
    # ∇ₓ CE(Wx + b, y) = Wᵀ (softmax(Wx + b) − onehot(y)), by hand
    p = torch.softmax(x @ model.weight.T + model.bias, dim=1)
    grad = (p - nn.functional.one_hot(y, 3)) @ model.weight
    expected = x + 0.3 * grad.sign()
    assert torch.allclose(fgsm(model, x, y, 0.3), expected, atol=0, rtol=0)


def test_fgsm_zero_epsilon_is_identity_and_clip_bounds():
    model = nn.Linear(4, 2)
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    assert fgsm(model, x, y, 5.0, clip=(-1.0, 1.0)).abs().max() <= 1.0


def test_fgsm_refuses_negative_epsilon():
    with pytest.raises(FragilityError, match="epsilon"):
        fgsm(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), -0.1)


def test_search_epsilon_reaches_the_target_ratio(trained_cnn, digits):
    x, y = digits[2], digits[3]
    eps = search_epsilon(trained_cnn, x, y, ratio=0.5)
    clean = accuracy(trained_cnn, x, y)
    attacked = accuracy(trained_cnn, fgsm(trained_cnn, x, y, eps), y)
    assert eps > 0
    assert abs(attacked / clean - 0.5) <= 0.02
    assert attacked * 10 > 1  # constraint 2


def test_search_epsilon_refuses_a_model_at_chance():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    nn.init.zeros_(model[1].weight)
    x, y = torch.randn(50, 4), torch.arange(50) % 10
    with pytest.raises(FragilityError, match="too low"):
        search_epsilon(model, x, y)


def test_search_epsilon_refuses_when_no_epsilon_is_large_enough(trained_cnn, digits):
    with pytest.raises(FragilityError, match="constraint 1"):
        search_epsilon(trained_cnn, digits[2][:200], digits[3][:200], max_epsilon=1e-6)
