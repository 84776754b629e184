"""Losses (values and gradients) and optimizers (update rules written out, resumable state)."""
import numpy as np
import pytest

from tinyddpm import losses, optimizers
from tinyddpm.nn import Parameter
from tinyddpm.testing import gradcheck

rng = np.random.default_rng(11)


def test_loss_values():
    y_true = np.array([[0.0, 0.0, 0.0, 0.0]])
    y_pred = np.array([[0.5, -2.0, 1.0, 0.0]])
    # Huber(delta=1): 0.5*0.25, 1*(2-0.5), 0.5*1, 0 -> mean
    assert losses.Huber()(y_true, y_pred).item() == pytest.approx((0.125 + 1.5 + 0.5) / 4)
    assert losses.Huber(delta=2.0)(y_true, y_pred).item() == pytest.approx((0.125 + 2 + 0.5) / 4)
    assert losses.MeanAbsoluteError()(y_true, y_pred).item() == pytest.approx(3.5 / 4)
    assert losses.MeanSquaredError()(y_true, y_pred).item() == pytest.approx(5.25 / 4)


@pytest.mark.parametrize("loss", [losses.Huber(), losses.Huber(0.3), losses.MeanAbsoluteError(),
                                  losses.MeanSquaredError()])
def test_loss_gradients(loss):
    y_true = rng.standard_normal((3, 4, 4, 1))
    y_pred = y_true + 1.5 * rng.standard_normal((3, 4, 4, 1))
    assert gradcheck(lambda p: loss(y_true, p), y_pred)
    assert gradcheck(lambda t: loss(t, y_pred), y_true)


def test_loss_shape_mismatch_and_names():
    with pytest.raises(ValueError, match=r"y_true has shape \(2, 3\) but y_pred has shape \(3, 2\)"):
        losses.Huber()(np.zeros((2, 3)), np.zeros((3, 2)))
    assert isinstance(losses.get("mae"), losses.MeanAbsoluteError)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge")


def run(opt, steps=6, seed=0):
    """Minimise sum((w - target)^2 * scale) for a few steps; returns the trajectory of w."""
    r = np.random.default_rng(seed)
    w = Parameter(r.standard_normal(5), dtype=np.float64)
    target, scale = r.standard_normal(5), r.random(5) + 0.5
    traj = []
    for _ in range(steps):
        w.grad = 2 * (w.data - target) * scale
        opt.step([w])
        traj.append(w.data.copy())
    return np.array(traj), target, scale, r.standard_normal(5)


def reference_nadam(g_fn, w, steps, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, legacy=False):
    """The Keras Nadam update written out step by step."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    prod = 1.0
    out = []
    for t in range(1, steps + 1):
        mu = lambda s: b1 * (1 - 0.5 * 0.96 ** (0.004 * s if legacy else s))  # noqa: E731
        prod *= mu(t)
        g = g_fn(w)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = mu(t + 1) * m / (1 - prod * mu(t + 1)) + (1 - mu(t)) * g / (1 - prod)
        w = w - lr * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(w.copy())
    return np.array(out)


@pytest.mark.parametrize("legacy", [False, True])
def test_nadam_matches_the_keras_update(legacy):
    traj, target, scale, _ = run(optimizers.Nadam(learning_rate=0.05, legacy_schedule=legacy))
    w0 = np.random.default_rng(0).standard_normal(5)
    ref = reference_nadam(lambda w: 2 * (w - target) * scale, w0, 6, lr=0.05, legacy=legacy)
    np.testing.assert_allclose(traj, ref, rtol=1e-12)


def test_adam_and_sgd_match_their_updates():
    traj, target, scale, _ = run(optimizers.Adam(learning_rate=0.1), steps=3)
    w = np.random.default_rng(0).standard_normal(5)
    m = v = 0
    for t in range(1, 4):
        g = 2 * (w - target) * scale
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(traj[-1], w, rtol=1e-12)

    traj, target, scale, _ = run(optimizers.SGD(learning_rate=0.1, momentum=0.9), steps=3)
    w, vel = np.random.default_rng(0).standard_normal(5), 0
    for _ in range(3):
        vel = 0.9 * vel - 0.1 * 2 * (w - target) * scale
        w = w + vel
    np.testing.assert_allclose(traj[-1], w, rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: optimizers.Nadam(0.05), lambda: optimizers.Adam(0.05),
                                  lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True)])
def test_optimizer_state_dict_resumes_exactly(make):
    full, *_ = run(make(), steps=8)
    opt = make()
    first, target, scale, _ = run(opt, steps=4)
    state = opt.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    w = Parameter(first[-1].copy(), dtype=np.float64)
    for _ in range(4):
        w.grad = 2 * (w.data - target) * scale
        resumed.step([w])
    np.testing.assert_allclose(w.data, full[-1], rtol=1e-12)


def test_optimizers_decrease_a_loss_and_reject_foreign_state():
    for opt in (optimizers.Nadam(0.1), optimizers.Adam(0.1), optimizers.SGD(0.05, momentum=0.5)):
        traj, target, scale, _ = run(opt, steps=50)
        assert np.sum((traj[-1] - target) ** 2) < 0.1 * np.sum((traj[0] - target) ** 2)
    opt = optimizers.Nadam()
    w = Parameter(np.ones(3))
    w.grad = np.ones(3, np.float32)
    opt.step([w])
    with pytest.raises(ValueError, match="does not fit"):
        optimizers.Nadam().load_state_dict(opt.state_dict(), params=[Parameter(np.ones(4))])
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.get("adagrad")
