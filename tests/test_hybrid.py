"""Learned variances and the hybrid loss (Nichol & Dhariwal, 2021): HybridLoss against the
likelihood module's independent NumPy terms, its gradient against central differences, and a
learned-variance model trained, sampled (iddpm), measured (bits/dim) and reloaded."""
import numpy as np
import pytest

import tinyddpm as td
from tinyddpm.likelihood import vlb_terms
from tinyddpm.tensor import Tensor
from tinyddpm.testing import gradcheck

rng = np.random.default_rng(0)
T = 10


def tiny(learn_sigma=True):
    return td.build_improved_model(T=T, widths=(4, 8, 8), groups=2, heads=2, dropout=0.0,
                                   seed=0, learn_sigma=learn_sigma)


def batch(n=6, times=(1, 2, 5, 10, 1, 7)):
    alpha, abar, beta = td.get_schedule(T)
    x0 = (rng.integers(0, 256, (n, 4, 4, 1)) / 127.5 - 1).astype(np.float64)
    eps = rng.standard_normal((n, 4, 4, 1))
    t = np.array(times[:n])
    a = abar[t].reshape(-1, 1, 1, 1).astype(np.float64)
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    pred = np.concatenate([eps + 0.3 * rng.standard_normal(eps.shape),
                           rng.uniform(-1, 1, eps.shape)], axis=-1)
    return {"noise": eps, "X": x0, "time": t}, pred, x_t


def bound_loss():
    model = tiny()
    return td.HybridLoss().bind(model), model


def test_the_vlb_part_is_the_bounds_terms_computed_independently():
    loss, model = bound_loss()
    targets, pred, x_t = batch()
    total = float(loss(targets, pred).data)
    simple = np.mean((pred[..., :1] - targets["noise"]) ** 2)
    alpha, abar, beta = (np.asarray(a, np.float64) for a in td.model_schedule(model))
    from tinyddpm.likelihood import posterior_variance

    frac = (pred[..., 1:] + 1) / 2
    t = targets["time"].reshape(-1, 1, 1, 1)
    log_var = frac * np.log(beta[t]) + (1 - frac) * posterior_variance(alpha, abar, beta)[1][t]
    nats = vlb_terms(pred[..., :1], targets["X"], x_t, targets["time"], clip=False,
                     schedule=(alpha, abar, beta), log_variance=log_var)
    expected = simple + 0.001 * T * nats.mean() / np.log(2)
    assert total == pytest.approx(expected, rel=1e-6)


def test_the_gradient_trains_v_through_the_bound_and_eps_through_l_simple_only():
    loss, _ = bound_loss()
    targets, pred, _ = batch()
    eps_theta = pred[..., :1]
    assert gradcheck(lambda v: loss(targets, td.ops.concatenate([Tensor(eps_theta), v], -1)),
                     pred[..., 1:])
    y = Tensor(pred, requires_grad=True)
    loss(targets, y).backward()
    np.testing.assert_allclose(y.grad[..., :1],
                               2 * (eps_theta - targets["noise"]) / eps_theta.size, rtol=1e-10)


def test_mistakes_are_named():
    with pytest.raises(ValueError, match="learn_sigma=True"):
        tiny(learn_sigma=False).compile(loss=td.HybridLoss())
    for other in ("huber", "mse", td.Huber()):  # the other way round: eps and v need the hybrid
        with pytest.raises(ValueError, match="HybridLoss"):
            tiny().compile(loss=other)
    loss, _ = bound_loss()
    targets, pred, _ = batch()
    with pytest.raises(ValueError, match="target='hybrid'"):
        loss(targets["noise"], pred)
    with pytest.raises(ValueError, match="eps then v"):
        loss(targets, pred[..., :1])
    with pytest.raises(ValueError, match="compile the model"):
        td.HybridLoss()(targets, pred)
    with pytest.raises(ValueError, match="lambda_vlb"):
        td.HybridLoss(-1)


def test_a_learned_variance_model_trains_samples_measures_and_reloads(tmp_path):
    from tinyddpm.pretrained import model_from_checkpoint

    model = tiny()
    model.compile(loss=td.HybridLoss(), optimizer=td.Nadam())
    (X, _), _ = td.data.load_subset()
    data = td.prepare_dataset(X[:16], batch_size=8, seed=0, T=T, target="hybrid",
                              alpha_cumprod=td.model_schedule(model)[1])
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    images = td.sample(model, 4, "iddpm", steps=5, seed=0)
    assert images.shape == (4, 28, 28, 1) and np.isfinite(images).all()
    report = td.bits_per_dim(model, X[:2], progress=False)
    assert report["variance"] == "learned" and np.isfinite(report["bpd"])
    td.save_checkpoint(tmp_path / "m.npz", model)
    again, _ = model_from_checkpoint(tmp_path / "m.npz")
    assert again.learns_sigma and again.config == model.config
    np.testing.assert_array_equal(td.sample(again, 4, "iddpm", steps=5, seed=0), images)


@pytest.fixture
def subset(monkeypatch):
    """The command line on the embedded subset (fast, and the same on every machine)."""
    from tinyddpm import data

    monkeypatch.setattr(data, "SEARCH_DIRS", ())
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)


def test_the_command_line_trains_and_samples_a_learned_variance_model(tmp_path, subset, capsys):
    from tinyddpm.__main__ import main
    from tinyddpm.checkpoint import read_checkpoint

    ckpt = str(tmp_path / "c.npz")
    assert main(["train", "--model", "improved", "--learn-sigma", "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "1", "--quiet",
                 "--checkpoint", ckpt]) == 0
    header = read_checkpoint(ckpt)[0]
    assert header["config"]["learn_sigma"] is True and header["run"]["learn_sigma"] is True
    assert "learned variances (hybrid loss)" in capsys.readouterr().out
    png = str(tmp_path / "s.png")
    assert main(["sample", "--checkpoint", ckpt, "--sampler", "iddpm", "--steps", "3", "--n",
                 "2", "--out", png]) == 0
    assert main(["train", "--epochs", "2", "--resume", "--model", "improved",
                 "--checkpoint", ckpt, "--quiet"]) == 0          # --learn-sigma comes back
    assert read_checkpoint(ckpt)[0]["config"]["learn_sigma"] is True
    capsys.readouterr()
    assert main(["train", "--learn-sigma", "--epochs", "1", "--checkpoint",
                 str(tmp_path / "d.npz")]) == 2
    assert "add --model improved" in capsys.readouterr().err
    assert main(["sample", "--pretrained", "book", "--sampler", "iddpm", "--n", "2", "--out",
                 png]) == 2
    assert "learn_sigma=True" in capsys.readouterr().err
