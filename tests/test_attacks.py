"""FGSM against its formula, PGD's invariants, attacks as objects on one base, and the ε tools with any attack
(Definitions 7–9)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fragility as fr
from fragility import FragilityError, fgsm, search_epsilon
from fragility.attacks import ATTACKS, Attack, accuracy, epsilon_curve, largest_epsilon, register_attack


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


# Attacks as objects: FGSM and PGD on one base (Definition 7), and the ε tools with any attack

def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).eval()


def test_fgsm_function_is_the_fgsm_object():
    model = small_net()
    x, y = torch.randn(7, 1, 6, 6), torch.arange(7) % 4
    assert torch.equal(fgsm(model, x, y, 0.2), fr.FGSM(0.2)(model, x, y))
    assert torch.equal(fgsm(model, x, y, 0.2, clip=(-0.5, 0.5), batch_size=3),
                       fr.FGSM(0.2, clip=(-0.5, 0.5))(model, x, y, batch_size=3))
    assert ATTACKS["fgsm"] is fr.FGSM and ATTACKS["pgd"] is fr.PGD


def pgd_by_hand(model, x, y, epsilon, steps, size):
    """PGD as usually written, x_{t+1} = min(max(x_t + size · sign(∇), x − ε), x + ε), with autograd."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(adv), y, reduction="sum"), adv)
        adv = torch.min(torch.max(adv.detach() + size * grad.sign(), x - epsilon), x + epsilon)
    return adv


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), epsilon=st.floats(0, 2), steps=st.integers(1, 6),
       share=st.sampled_from([None, 0.1, 0.5, 1.0, 3.0]), start=st.booleans(), batch=st.integers(1, 9))
def test_pgd_stays_in_the_epsilon_ball(seed, epsilon, steps, share, start, batch):
    model = small_net(seed % 5)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(9, 1, 6, 6, generator=gen), torch.randint(0, 4, (9,), generator=gen)
    size = None if share is None else share * epsilon
    adv = fr.PGD(epsilon, steps=steps, step_size=size, random_start=start, seed=seed)(model, x, y, batch_size=batch)
    assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert float((adv - x).abs().max()) <= epsilon * (1 + 1e-6) + 1e-6


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), epsilon=st.floats(0, 2), clip=st.booleans())
def test_pgd_one_step_of_epsilon_is_fgsm(seed, epsilon, clip):
    model = small_net(seed % 5)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 1, 6, 6, generator=gen), torch.randint(0, 4, (6,), generator=gen)
    bounds = (-0.8, 0.8) if clip else None
    assert torch.equal(fr.PGD(epsilon, steps=1, step_size=epsilon, clip=bounds)(model, x, y),
                       fr.FGSM(epsilon, clip=bounds)(model, x, y))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), steps=st.integers(1, 5), start=st.booleans())
def test_pgd_of_zero_epsilon_is_the_input(seed, steps, start):
    model = small_net(seed % 5)
    x, y = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(seed)), torch.arange(5) % 4
    assert torch.equal(fr.PGD(0.0, steps=steps, random_start=start, seed=seed)(model, x, y), x)


def test_pgd_against_the_usual_formulation():
    for seed in range(3):
        model = small_net(seed)
        x, y = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(seed)), torch.arange(8) % 4
        ours = fr.PGD(0.3, steps=5, step_size=0.1)(model, x, y)
        torch.testing.assert_close(ours, pgd_by_hand(model, x, y, 0.3, 5, 0.1), atol=1e-6, rtol=0)
        assert not torch.allclose(ours, fr.FGSM(0.3)(model, x, y))  # several steps are not one


def test_pgd_random_start_is_seeded_per_example():
    model = small_net()
    x, y = torch.randn(10, 1, 6, 6), torch.arange(10) % 4
    attack = fr.PGD(0.3, steps=2, random_start=True, seed=4)
    whole = attack(model, x, y)
    assert torch.equal(whole, attack(model, x, y, batch_size=3))  # any batching draws the same
    assert torch.equal(whole[6:], attack(model, x[6:], y[6:], start=6))  # each example's draw is its own
    assert not torch.equal(whole, fr.PGD(0.3, steps=2, random_start=True, seed=5)(model, x, y))
    assert not torch.equal(whole, fr.PGD(0.3, steps=2)(model, x, y))


def test_pgd_respects_clip_and_step_size_default():
    model = small_net()
    x, y = torch.randn(6, 1, 6, 6), torch.arange(6) % 4
    assert fr.PGD(1.0, steps=3, clip=(-0.5, 0.5))(model, x, y).abs().max() <= 0.5
    assert torch.equal(fr.PGD(0.4, steps=4)(model, x, y), fr.PGD(0.4, steps=4, step_size=2.5 * 0.4 / 4)(model, x, y))


@pytest.mark.parametrize("make, match", [
    (lambda: fr.PGD(-0.1), "epsilon must be"), (lambda: fr.PGD(0.1, steps=0), "steps must be"),
    (lambda: fr.PGD(0.1, step_size=float("nan")), "step_size must be"),
    (lambda: fr.PGD(0.1, random_start="yes"), "random_start must be True or False"),
    (lambda: fr.PGD(0.1, seed=-1), "seed must be"), (lambda: fr.FGSM(0.1, clip=(1, 0)), "clip must be"),
    (lambda: fr.FGSM()(small_net(), torch.zeros(2, 1, 6, 6), torch.zeros(2, dtype=torch.long)), "epsilon is not set"),
    (lambda: fr.FGSM(0.1)(small_net(), torch.zeros(2, 1, 6, 6), torch.zeros(2, dtype=torch.long), batch_size=0),
     "batch_size must be"),
    (lambda: fr.FGSM(0.1)("a model", torch.zeros(2, 1, 6, 6), torch.zeros(2, dtype=torch.long)), "model must be"),
    (lambda: register_attack("PGD!"), "an attack's name"),
    (lambda: register_attack("pgd")(type("PGD", (Attack,), {})), "already registered"),
    (lambda: register_attack("mine")(int), "decorates an Attack subclass"),
    (lambda: epsilon_curve(small_net(), torch.zeros(2, 1, 6, 6), torch.zeros(2, dtype=torch.long), epsilons=[0.1],
                           attack="bim"), "attack must be"),
])
def test_bad_attack_arguments(make, match):
    with pytest.raises(FragilityError, match=match):
        make()


@pytest.mark.parametrize("ratio, tol", [(0.5, 0.6), (0.5, 0.5), (0.1, 0.1), (0.9, 0.15)])
def test_search_epsilon_refuses_a_tolerance_that_bounds_nothing(ratio, tol):
    with pytest.raises(FragilityError, match=r"tol must be below min\(ratio, 1 − ratio\)"):
        search_epsilon(small_net(), torch.zeros(4, 1, 6, 6), torch.zeros(4, dtype=torch.long), ratio=ratio, tol=tol)


def test_epsilon_tools_take_any_attack(trained_cnn, digits):
    x, y = digits[2][:100], digits[3][:100]
    pgd = fr.PGD(steps=3)
    eps = search_epsilon(trained_cnn, x, y, attack=pgd, tol=0.05)
    clean = accuracy(trained_cnn, x, y)
    assert abs(accuracy(trained_cnn, pgd.at(eps)(trained_cnn, x, y), y) / clean - 0.5) <= 0.05
    curve = epsilon_curve(trained_cnn, x, y, epsilons=[0.0, 0.1, 0.3], attack=pgd)
    expected = [accuracy(trained_cnn, pgd.at(e)(trained_cnn, x, y), y) for e in (0.0, 0.1, 0.3)]
    np.testing.assert_array_equal(curve.values, expected)
    assert "PGD" in curve.attrs["long_name"]
    edge = largest_epsilon(trained_cnn, x, y, attack="pgd", grid=16, steps=6)
    chance = max(0.1, float(torch.bincount(y).max()) / len(y))
    assert accuracy(trained_cnn, fr.PGD(edge)(trained_cnn, x, y), y) > chance
    # a single-step attack's curve is the same whether its gradient is reused or recomputed at each ε
    fgsm_curve = epsilon_curve(trained_cnn, x, y, epsilons=[0.0, 0.2], attack=fr.FGSM())
    np.testing.assert_array_equal(fgsm_curve.values, [accuracy(trained_cnn, fgsm(trained_cnn, x, y, e), y)
                                                      for e in (0.0, 0.2)])
