"""The improved U-Net (unet_improved.py): shapes, its gradient against central differences
(float64, a tiny configuration), per-image normalisation, dropout only in training, the errors."""
import numpy as np
import pytest

from tinyddpm.tensor import Tensor
from tinyddpm.testing import gradcheck
from tinyddpm.unet_improved import AttentionBlock, ResBlock, build_improved_model

rng = np.random.default_rng(0)


def inputs(n=2, T=10):
    return {"X_noisy": rng.standard_normal((n, 28, 28, 1)).astype(np.float32),
            "time": rng.integers(0, T + 1, n)}


def tiny(**options):
    return build_improved_model(T=10, widths=(4, 8, 8), groups=2, heads=2, seed=0, **options)


def test_output_is_the_noise_shape_and_the_config_records_the_options():
    model = tiny(dropout=0.0)
    batch = inputs()
    assert model(batch).shape == (2, 28, 28, 1)
    assert model.config["model"] == "improved" and model.config["widths"] == [4, 8, 8]
    assert model.config["attention"] == [14, 7] and model.config["T"] == 10


def test_each_image_is_computed_alone_in_training_as_in_inference():
    """GroupNorm's statistics are per image: unlike BatchNorm, the batch does not matter."""
    model = tiny(dropout=0.0).train()
    batch = inputs(3)
    whole = model(batch).data
    first = model({k: v[:1] for k, v in batch.items()}).data
    np.testing.assert_allclose(whole[:1], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.eval()(batch).data, whole, rtol=1e-5, atol=1e-6)


def test_dropout_acts_in_training_only():
    model = tiny(dropout=0.5)
    batch = inputs()
    assert np.array_equal(model.eval()(batch).data, model(batch).data)
    model.train()
    assert not np.allclose(model(batch).data, model(batch).data)


def test_gradient_of_the_whole_model_against_central_differences():
    model = tiny(dropout=0.0).astype(np.float64).train()
    time = np.array([3, 9])
    x = rng.standard_normal((2, 28, 28, 1))
    params = [p for _, p in model.named_parameters()]
    assert gradcheck(lambda X: model({"X_noisy": X, "time": time}), x, wrt=params,
                     max_elements=3, atol=1e-5, rtol=1e-4)


def test_blocks_alone():
    res = ResBlock(4, 6, groups=2, dropout=0.0).astype(np.float64)
    attn = AttentionBlock(4, heads=2, groups=2).astype(np.float64)
    x, emb = rng.standard_normal((2, 7, 7, 4)), rng.standard_normal((2, 16))
    res(Tensor(x), Tensor(emb))
    attn(Tensor(x))
    assert gradcheck(lambda a, e: res(a, e), x, emb, wrt=[p for _, p in res.named_parameters()])
    assert gradcheck(lambda a: attn(a), x, wrt=[p for _, p in attn.named_parameters()])


def test_widths_that_groups_or_heads_cannot_split_are_refused():
    with pytest.raises(ValueError, match="not divisible by groups"):
        build_improved_model(T=10, widths=(6, 8, 8), groups=4)
    with pytest.raises(ValueError, match="heads"):
        build_improved_model(T=10, widths=(4, 6, 6), groups=2, heads=4)
    with pytest.raises(ValueError, match="3 values"):
        build_improved_model(T=10, widths=(8, 8), groups=2)
