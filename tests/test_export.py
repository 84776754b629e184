"""tinyddpm.export against the real things: PyTorch for the twins (outputs, BatchNorm statistics,
a training step with torch's own NAdam and HuberLoss, DistributedDataParallel through torchrun)
and onnxruntime for the ONNX files. Every test that needs torch, onnx or onnxruntime skips
without it; the command line's checks and its missing-package message run everywhere."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import nn
from tinyddpm.__main__ import main
from tinyddpm.latent import build_autoencoder, build_latent_model

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "train_torch_ddp.py"


@pytest.fixture
def torch():
    """torch, on one thread: its OpenMP pool and numba's, both spinning on 2 cores, slow each
    other down tenfold (README, "Speed on a busy machine")."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture
def ort(torch):
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def shifted_biases(model):
    """The biases of the layers a BatchNorm follows: their gradient is 0 in exact arithmetic
    (the normalisation removes any shift), so training moves them by rounding noise only."""
    return {f"{path}.bias" for path, m in model.named_modules()
            if m.__dict__.get("folded_batchnorm") is not None}


def example_module():
    """examples/train_torch_ddp.py as a module (its Nadam, loss and data set)."""
    spec = importlib.util.spec_from_file_location("train_torch_ddp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomized(model, seed=0):
    """``model`` with every weight and BatchNorm statistic random (biases and BatchNorm's beta
    too: none left at 0 or 1, so a weight put in the wrong place shows)."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("moving_variance"):
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
        elif key.endswith(("latent_std", "latent_bound")):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        else:
            scale = max(float(np.abs(value).max()), 0.1)
            state[key] = (value + 0.3 * scale * rng.standard_normal(value.shape)).astype(
                value.dtype)
    model.load_state_dict(state)
    return model


def inputs_for(kind, n, seed=1):
    """(tinyddpm inputs, the same as torch call arguments) for a model kind."""
    import torch

    rng = np.random.default_rng(seed)
    shape = {"latent": (7, 7, 4)}.get(kind, (28, 28, 1))
    if kind == "autoencoder":
        x = rng.uniform(-1, 1, (n, 28, 28, 1)).astype(np.float32)
        return x, (torch.from_numpy(x),)
    inputs = {"X_noisy": rng.standard_normal((n, *shape)).astype(np.float32),
              "time": np.concatenate([[0, 4000], rng.integers(1, 4000, n)])[:n]}
    if kind == "conditional":
        inputs["label"] = rng.integers(0, 11, n)  # 10: "no class"
    return inputs, tuple(torch.from_numpy(v) for v in inputs.values())


def build(kind):
    if kind in ("book", "conditional"):
        return randomized(td.build_diffusion_model(seed=0, num_classes=10 if kind ==
                                                   "conditional" else None))
    ae = randomized(build_autoencoder(seed=0), seed=1)
    return ae if kind == "autoencoder" else randomized(build_latent_model(ae, seed=2), seed=3)


def assert_float32_close(actual, expected, what):
    """Equal up to float32 rounding through a deep network: 1e-5 of the largest value."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def assert_states_close(actual, expected, rtol, what):
    assert sorted(actual) == sorted(expected), what
    for key in expected:
        scale = max(1.0, float(np.abs(expected[key]).max()))
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=rtol * scale,
                                   err_msg=f"{what}: {key}")


# ------------------------------------------------------------------------------ to_torch, back

KINDS = ["book", "conditional", "autoencoder", "latent"]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_in_inference_and_training_mode(kind, torch):
    from tinyddpm.export import _torch, from_torch, to_torch

    model = build(kind)
    net = to_torch(model)
    assert not net.training and net.tinyddpm_header["config"] == model.config
    tiny_inputs, torch_inputs = inputs_for(kind, 5)
    with torch.no_grad():
        assert_float32_close(net(*torch_inputs).numpy(), model(tiny_inputs).data,
                             f"{kind}: inference outputs")
    if kind == "autoencoder":  # its halves, NHWC both
        x = torch_inputs[0]
        with torch.no_grad():
            z = net.encoder(x)
            assert_float32_close(z.numpy(), model.encoder(tiny_inputs).data, "encoder")
            assert_float32_close(net.decoder(z).numpy(), model.decoder(z.numpy()).data,
                                 "decoder")
    # a step in training mode: batch statistics, and the moving ones move the same way
    expected = model(tiny_inputs, training=True).data
    net.train()
    assert_float32_close(net(*torch_inputs).detach().numpy(), expected,
                         f"{kind}: training-mode outputs")
    moved = model.state_dict()
    assert_states_close(_torch.tiny_state(net, model), moved, 1e-6, f"{kind}: after the step")
    # and back: the weights and statistics torch holds now, exactly, in a fresh model
    back = from_torch(net)
    assert type(back) is type(model) and not back.training
    for key, value in _torch.tiny_state(net, model).items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    net.eval()
    with torch.no_grad():
        assert_float32_close(back(tiny_inputs).data, net(*torch_inputs).numpy(),
                             f"{kind}: back in tinyddpm")
    if kind == "latent":  # the frozen autoencoder stays frozen, as in Keras
        assert not any(p.requires_grad for p in net.autoencoder.parameters())


def test_the_round_trip_is_exact_and_independent(torch):
    from tinyddpm.export import from_torch, to_torch

    model = build("conditional")
    net = to_torch(model)
    back = from_torch(net)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    with torch.no_grad():  # copies: changing one leaves the other
        net.conv_in.weight.add_(1.0)
    np.testing.assert_array_equal(model.state_dict()["conv_in.kernel"],
                                  back.state_dict()["conv_in.kernel"])


def test_a_training_step_in_torch_is_a_training_step_in_tinyddpm(torch):
    """Two steps of tinyddpm's fit (Huber, Keras' Nadam) against the twin trained with the DDP
    example's torch optimizer and loss, in float64 (where a wrong rule cannot hide in float32
    rounding, which Nadam's sign-like first steps amplify for gradients near 0)."""
    from tinyddpm.export import _torch, to_torch

    example = example_module()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch keeps NAdam's scalars in it
    try:
        model = randomized(td.build_diffusion_model(seed=0)).astype(np.float64)
        model.compile(loss=td.Huber(), optimizer=td.Nadam(learning_rate=0.01))
        net = to_torch(model).double().train()
        optimizer, loss_fn = example.keras_nadam(net.parameters(), 0.01), example.huber()
        rng = np.random.default_rng(4)
        for step in range(2):
            inputs, noise = td.prepare_batch(rng.integers(0, 256, (6, 28, 28), np.uint8),
                                             rng=rng)
            inputs["X_noisy"] = inputs["X_noisy"].astype(np.float64)
            loss = loss_fn(net(torch.from_numpy(inputs["X_noisy"]),
                               torch.from_numpy(inputs["time"].astype(np.int64))),
                           torch.from_numpy(noise.astype(np.float64)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert model.train_step(inputs, noise.astype(np.float64)) == pytest.approx(
                loss.item(), rel=1e-12)
        before = randomized(td.build_diffusion_model(seed=0)).state_dict()
        after = model.state_dict()
        moved = np.mean([np.abs(after[k] - before[k]).max() > 1e-3 for k in after
                         if not k.endswith("bias")])
        assert moved > 0.9, "the weights barely moved: the comparison would be too weak"
        # The bias of a layer a BatchNorm follows has a gradient of 0 in exact arithmetic (the
        # normalisation removes any shift): both sides hold rounding noise there (~1e-13), which
        # Nadam multiplies by lr / epsilon (1e5). Those biases may differ by that much only.
        shifted = shifted_biases(model)
        got = _torch.tiny_state(net, model)
        assert len(shifted) == 13
        for key in shifted:
            np.testing.assert_allclose(got.pop(key), after.pop(key), rtol=0, atol=1e-6)
        assert_states_close(got, after, 1e-9, "after two steps")
    finally:
        torch.set_default_dtype(previous)


def test_from_torch_takes_files_state_dicts_and_ddp_names(tmp_path, torch):
    from tinyddpm.export import from_torch, save_torch, to_torch

    model = build("book")
    model.epoch, model.run_history = 2, td.History({"loss": [0.5, 0.25]})
    net = to_torch(model)
    path = save_torch(net, tmp_path / "m.pt", epoch=2, history={"loss": [0.5, 0.25]})
    saved = torch.load(path, weights_only=True)  # plain data: the format promises it
    assert saved["format"] == "tinyddpm-torch" and saved["config"] == model.config
    back = from_torch(path)
    assert back.epoch == 2 and back.run_history.history == {"loss": [0.5, 0.25]}
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    # a bare state_dict (a DDP wrapper's, with its "module." prefix) needs the architecture
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="does not say which model it holds: pass model="):
        from_torch(state)
    filled = from_torch(state, model=td.build_diffusion_model())
    np.testing.assert_array_equal(filled.state_dict()["up1.bn2.moving_mean"],
                                  model.state_dict()["up1.bn2.moving_mean"])


def test_from_torch_refuses_what_does_not_fit(tmp_path, torch):
    from tinyddpm.export import from_torch, to_torch

    net = to_torch(td.build_diffusion_model(seed=0))
    with pytest.raises(ValueError, match="does not match the model given"):
        from_torch(net, model=td.build_diffusion_model(num_classes=10))
    state = net.state_dict()
    del state["conv_in.weight"]
    with pytest.raises(ValueError, match="does not fit the tinyddpm model.*conv_in.weight"):
        from_torch(state, model=td.build_diffusion_model())
    state = net.state_dict()
    state["up0.bn1.running_var"][3] = float("nan")
    with pytest.raises(ValueError, match="up0.bn1.moving_variance holds NaN"):
        from_torch(state, model=td.build_diffusion_model())
    from tinyddpm.export import save_torch

    save_torch(net, tmp_path / "edited.pt", epoch=-1)
    with pytest.raises(ValueError, match="the header field 'epoch' must be a whole number"):
        from_torch(tmp_path / "edited.pt")
    torch.save({"weights": net.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a tinyddpm torch file"):
        from_torch(tmp_path / "plain.pt")
    torch.save({"format": "tinyddpm-torch", "evil": Path("x")}, tmp_path / "object.pt")
    with pytest.raises(ValueError, match="never loaded"):  # weights_only: no code runs
        from_torch(tmp_path / "object.pt")
    with pytest.raises(FileNotFoundError):
        from_torch(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="no torch twin for Model"):
        from tinyddpm.export import to_torch as again
        again(build_functional_model())


def build_functional_model():
    from tinyddpm import keras

    x = keras.layers.Input(shape=[4])
    return keras.Model(inputs=[x], outputs=[keras.layers.Dense(2)(x)])


def test_the_conv_twins_follow_keras_padding_and_strides(torch):
    """Layers the package's models do not use yet, with the sizes where Keras' 'same' padding
    is uneven and Conv2DTranspose crops (stride 2, even and odd kernels)."""
    from tinyddpm.export import _torch

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    for layer in (nn.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
                  nn.Conv2D(4, 2, padding="same"), nn.Conv2DTranspose(4, 3, strides=2),
                  nn.Conv2DTranspose(4, 4, strides=2, padding="valid", activation="tanh"),
                  nn.Conv2DTranspose(4, 2, strides=2, padding="same"),
                  nn.Conv2DTranspose(4, 1, strides=3, padding="same"),
                  nn.MaxPooling2D(2, padding="same"), nn.SeparableConv2D(5, 3, padding="same")):
        layer(x)
        randomized(layer)
        got = _torch.twin(layer)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        assert_float32_close(got.detach().numpy(), layer(x).data, repr(layer.init_args))


# ------------------------------------------------------------------------------------ ONNX

@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """The book's model and the conditional one, randomized, and their ONNX files."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tinyddpm.export import to_onnx

    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for kind in ("book", "conditional"):
        model = build(kind)
        out[kind] = model, to_onnx(model, folder / f"{kind}.onnx")
    return out


@pytest.mark.parametrize("kind", ["book", "conditional"])
@pytest.mark.parametrize("n", [1, 5])
def test_onnxruntime_gives_tinyddpms_outputs_at_any_batch_size(kind, n, onnx_files, ort):
    import onnx

    model, path = onnx_files[kind]
    proto = onnx.load(path)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["X_noisy", "time"] + (["label"] if kind == "conditional" else [])
    assert session.get_inputs()[0].shape[1:] == [28, 28, 1]
    assert [o.name for o in session.get_outputs()] == ["noise"]
    inputs, _ = inputs_for(kind, n, seed=n)
    got = session.run(None, {k: v.astype(np.int64) if k != "X_noisy" else v
                             for k, v in inputs.items()})[0]
    assert_float32_close(got, model(inputs).data, f"{kind}, batch {n}")


def test_the_same_ddim_samples_from_tinyddpm_and_from_onnx(onnx_files, ort):
    from tinyddpm.export import OnnxModel

    model, path = onnx_files["book"]
    deployed = OnnxModel(path)
    assert deployed.config == model.config and "T=4000" in repr(deployed)
    expected = td.generate_ddim(model, 6, steps=20, seed=3)
    np.testing.assert_allclose(td.generate_ddim(deployed, 6, steps=20, seed=3), expected,
                               atol=1e-4)
    # a bare onnxruntime session, with the schedule given since it carries none
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    fn = lambda inputs: session.run(None, inputs)[0]  # noqa: E731
    np.testing.assert_allclose(td.sample(fn, 6, "ddim", steps=20, spacing="leading", seed=3,
                                         T=4000, schedule="cosine"), expected, atol=1e-4)
    # guidance through the conditional file: both halves of the doubled batch
    model, path = onnx_files["conditional"]
    np.testing.assert_allclose(td.sample(OnnxModel(path), 4, steps=5, seed=1, label=7,
                                         guidance=3), td.sample(model, 4, steps=5, seed=1,
                                                                label=7, guidance=3), atol=1e-4)


def _edited(path, tmp_path, change):
    import onnx

    proto = onnx.load(path)
    change(proto)
    out = tmp_path / "edited.onnx"
    onnx.save(proto, out)
    return out


def test_the_onnx_metadata_is_checked_against_the_graph(onnx_files, tmp_path, ort):
    import onnx

    from tinyddpm.export import OnnxModel

    _, path = onnx_files["book"]

    def set_meta(key, value):
        def change(proto):
            for p in proto.metadata_props:
                if p.key == key:
                    p.value = value
        return change
    config = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}
                        ["tinyddpm.config"])
    with pytest.raises(ValueError, match=r"no time encoding of T \+ 1 = 1001 steps"):
        OnnxModel(_edited(path, tmp_path, set_meta("tinyddpm.config",
                                                   json.dumps({**config, "T": 1000}))))
    with pytest.raises(ValueError, match="the graph's inputs .* are not those its metadata"):
        OnnxModel(_edited(path, tmp_path, set_meta("tinyddpm.config",
                                                   json.dumps({**config, "num_classes": 10}))))
    with pytest.raises(ValueError, match="schedule is not valid"):
        OnnxModel(_edited(path, tmp_path, set_meta("tinyddpm.config", json.dumps(
            {**config, "schedule": {"kind": "quadratic"}}))))
    with pytest.raises(ValueError, match=r"not one written by tinyddpm's to_onnx.*T=\.\.\."):
        OnnxModel(_edited(path, tmp_path, lambda proto: proto.ClearField("metadata_props")))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")


def test_to_onnx_refuses_before_writing(tmp_path, ort):
    from tinyddpm.export import to_onnx

    with pytest.raises(ValueError, match="must end in .onnx"):
        to_onnx(build("book"), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="a latent model is its U-Net and its decoder"):
        to_onnx(build("latent"), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="this model is float64: convert it"):
        to_onnx(build("book").astype(np.float64), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------- inputs, dtypes, the samplers

BAD_INPUTS = [  # (what is wrong, X_noisy, time, label for the conditional model)
    ("time below 0", np.zeros((2, 28, 28, 1), np.float32), np.array([-1, -1]), None),
    ("fractional time", np.zeros((2, 28, 28, 1), np.float32),
     np.array([1.5, 1.9], np.float32), None),  # (tinyddpm casts float64 inputs to float32)
    ("time above T", np.zeros((2, 28, 28, 1), np.float32), np.array([4001, 1]), None),
    ("label above num_classes", np.zeros((2, 28, 28, 1), np.float32), np.array([1, 2]),
     np.array([11, 1])),
    ("negative label", np.zeros((2, 28, 28, 1), np.float32), np.array([1, 2]),
     np.array([0, -1])),
    ("time of another length", np.zeros((2, 28, 28, 1), np.float32), np.array([1, 2, 3]), None),
    ("images of another size", np.zeros((2, 32, 32, 1), np.float32), np.array([1, 2]), None),
    ("integer images", np.zeros((2, 28, 28, 1), np.int64), np.array([1, 2]), None),
]


@pytest.mark.parametrize("what,X,time,label", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_onnx_and_torch_check_their_inputs_as_tinyddpm_does(what, X, time, label, onnx_files,
                                                           torch, capfd):
    """The same ValueError, word for word, from the tinyddpm model, its ONNX file (before
    onnxruntime runs: nothing on stderr) and its torch twin."""
    from tinyddpm.export import OnnxModel, to_torch

    kind = "book" if label is None else "conditional"
    model, path = onnx_files[kind]
    inputs = {"X_noisy": X, "time": time, **({"label": label} if label is not None else {})}
    with pytest.raises(ValueError) as expected:
        model(inputs)
    with pytest.raises(ValueError) as onnx_error:
        OnnxModel(path)(inputs)
    with pytest.raises(ValueError) as torch_error:
        to_torch(model)(*(torch.from_numpy(v) for v in inputs.values()))
    assert str(onnx_error.value) == str(expected.value) == str(torch_error.value)
    assert capfd.readouterr().err == ""  # no onnxruntime error line


def test_the_torch_twin_refuses_what_is_not_a_tensor(torch):
    from tinyddpm.export import to_torch

    net = to_torch(build("book"))
    with pytest.raises(TypeError, match=r"'time' must be a torch tensor, received ndarray"):
        net(torch.zeros(2, 28, 28, 1), np.array([1, 2]))


def test_a_float64_model_stays_float64_there_and_back(tmp_path, torch):
    from tinyddpm.export import from_torch, save_torch, to_torch

    model = randomized(td.build_diffusion_model(seed=1)).astype(np.float64)
    net = to_torch(model)
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    assert net.time_encoding.table.dtype == torch.float64
    inputs, _ = inputs_for("book", 3)
    inputs["X_noisy"] = inputs["X_noisy"].astype(np.float64)
    with torch.no_grad():
        out = net(torch.from_numpy(inputs["X_noisy"]), torch.from_numpy(inputs["time"]))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), model(inputs).data, rtol=1e-10, atol=1e-10)
    for back in (from_torch(net), from_torch(save_torch(net, tmp_path / "m64.pt"))):
        state = back.state_dict()
        for key, value in model.state_dict().items():
            assert state[key].dtype == np.float64, key
            np.testing.assert_array_equal(state[key], value, err_msg=key)
        np.testing.assert_array_equal(back(inputs).data, model(inputs).data)
    with pytest.raises(ValueError, match=r"holds float64 weights, and the model given is "
                       r"float32: pass model.astype\(np.float64\)"):
        from_torch(net, model=td.build_diffusion_model())
    with pytest.raises(ValueError, match=r"holds float16 weights; tinyddpm computes in float32 "
                       r"or float64"):
        from_torch(to_torch(build("book")).half())


@pytest.mark.parametrize("kind", ["book", "conditional"])
def test_the_samplers_take_the_torch_twin(kind, torch):
    """td.sample(to_torch(model)): torch computes, with the schedule of the twin's config, in
    inference mode; a twin in training mode stays so, its BatchNorm statistics unchanged."""
    from tinyddpm.export import _torch, to_torch

    model = build(kind)
    net = to_torch(model).train()
    before = _torch.tiny_state(net, model)
    guide = {"label": 7, "guidance": 3} if kind == "conditional" else {}
    got = td.sample(net, 3, "ddim", steps=5, spacing="leading", seed=2, **guide)
    np.testing.assert_allclose(got, td.sample(model, 3, "ddim", steps=5, spacing="leading",
                                              seed=2, **guide), atol=1e-4)
    assert net.training
    after = _torch.tiny_state(net, model)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert td.sample(net, 2, "ddim", steps=5, seed=2, **guide).shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="this model was trained with T=4000"):
        td.sample(net, 2, T=1000)


def test_the_samplers_refuse_a_latent_twin_with_the_way_to_sample_it(torch):
    from tinyddpm.export import to_torch

    with pytest.raises(TypeError, match=r"td.sample\(tinyddpm.export.from_torch\(net\), 64\)"):
        td.sample(to_torch(build("latent")), 2, steps=2)


def test_save_torch_and_to_onnx_refuse_a_missing_folder(tmp_path, ort):
    from tinyddpm.export import save_torch, to_onnx, to_torch

    model = build("book")
    with pytest.raises(ValueError, match="save_torch: path .*: the folder .* does not exist; "
                       "create it first"):
        save_torch(to_torch(model), tmp_path / "missing" / "m.pt")
    with pytest.raises(ValueError, match="to_onnx: path .*: the folder .* does not exist; "
                       "create it first"):
        to_onnx(model, tmp_path / "missing" / "m.onnx")
    assert not os.listdir(tmp_path)


def test_from_torch_says_what_a_forged_header_or_nan_weights_mean(tmp_path, torch):
    from tinyddpm.export import from_torch, save_torch, to_torch

    net = to_torch(build("book"))
    net.tinyddpm_header = {**net.tinyddpm_header, "model_class": "Autoencoder"}
    save_torch(net, tmp_path / "forged.pt")
    with pytest.raises(ValueError, match=r"says it holds a 'Autoencoder', but its config .* "
                       r"does not describe one .*latent_channels.*; the file is damaged or was "
                       r"edited"):
        from_torch(tmp_path / "forged.pt")
    net = to_torch(build("book"))
    with torch.no_grad():
        net.conv_out.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError) as error:
        from_torch(net)
    assert "conv_out.kernel holds NaN" in str(error.value)
    assert "diverged" in str(error.value) and ".best.npz" not in str(error.value)


# --------------------------------------------------------------------------- DDP, torchrun

def test_two_processes_reach_the_weights_of_one_on_the_doubled_batch(tmp_path, torch):
    """torchrun --nproc_per_node 2 (gloo) against one process, the same global batch of 4:
    sync BatchNorm and DDP's gradient average make them the same run. In float64, so that
    agreement means 1e-9 (float32 rounds the two runs' sums differently, by up to 3e-4 of a
    gradient at this depth, and Nadam turns gradients near 0 into steps of +-lr either way)."""
    args = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "3",
            "--dtype", "float64", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p), "OMP_NUM_THREADS": "1"}
    runs = {"one": [sys.executable, str(EXAMPLE)],
            "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    str(EXAMPLE)]}
    states = {}
    for name, command in runs.items():
        done = subprocess.run([*command, *args, "--out", str(tmp_path / f"{name}.pt")],
                              env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        states[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    one, two = states["one"], states["two"]
    assert one["history"]["loss"] == pytest.approx(two["history"]["loss"], rel=1e-12)
    start = td.build_diffusion_model(seed=3)
    from tinyddpm.export import from_torch

    trained = from_torch(tmp_path / "one.pt").state_dict()
    assert all(not np.allclose(trained[k], v) for k, v in start.state_dict().items()
               if k not in shifted_biases(start)), "a weight did not move"
    assert_states_close({k: v.numpy() for k, v in two["state_dict"].items()},
                        {k: v.numpy() for k, v in one["state_dict"].items()}, 1e-9,
                        "2 processes against 1")


def script_env(**extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p), "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1", **extra}


def test_the_ddp_script_checks_its_options_before_any_work(tmp_path):
    """The options first; then torch (named with its pip install where it is missing), then the
    data folder."""
    import importlib.util

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    data_words = "does not hold the Fashion-MNIST" if importlib.util.find_spec("torch") else \
        "needs torch, which is not installed: pip install torch"
    for argv, words in ((["--epochs", "1", "--out", str(tmp_path / "x.npz")], "must end in .pt"),
                        (["--epochs", "0"], "--epochs: must be >= 1"),
                        (["--epochs", "1", "--label-dropout", "0.2"], "add --conditional"),
                        (["--epochs", "1", "--data-dir", str(tmp_path / "nowhere"),
                          "--out", str(tmp_path / "d.pt")], data_words)):
        done = subprocess.run([sys.executable, str(EXAMPLE), *argv], env=env, timeout=60,
                              capture_output=True, text=True)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and words in last, done.stderr
        assert last.startswith("examples/train_torch_ddp.py: error: ") and \
            "Traceback" not in done.stderr, done.stderr
    assert not os.listdir(tmp_path)
    done = subprocess.run([sys.executable, str(EXAMPLE), "--help"], env=env, timeout=60,
                          capture_output=True, text=True)
    assert "torchrun" in done.stdout and "(default: 32)" in done.stdout


def test_the_ddp_script_without_torch_names_the_pip_install(tmp_path):
    blocked = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked, str(EXAMPLE), "--epochs", "1", "--out",
                           str(tmp_path / "d.pt")], env=script_env(), timeout=60,
                          capture_output=True, text=True)
    last = done.stderr.splitlines()[-1]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "error: examples/train_torch_ddp.py needs torch" in last and "pip install torch" in last


def test_the_ddp_script_starts_as_tinyddpms_train_does(tmp_path, torch):
    """The same seed, the same first batch: the first step's loss (before any update) is the
    one `python -m tinyddpm train` reports, to float32 rounding (another batch: 1e-3 off). And
    the closing hint names the --out given."""
    common = ["--epochs", "1", "--steps-per-epoch", "1", "--seed", "5"]
    for conditional in ([], ["--conditional"]):
        out = tmp_path / f"mine{len(conditional)}.pt"
        done = subprocess.run([sys.executable, str(EXAMPLE), *common, *conditional, "--out",
                               str(out)], env=script_env(), capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == (
            f"Back to tinyddpm: python -m tinyddpm export --checkpoint {out} --to tinyddpm "
            f"--out {tmp_path / out.stem}.npz")
        ckpt = tmp_path / f"train{len(conditional)}.npz"
        done = subprocess.run([sys.executable, "-m", "tinyddpm", "train", *common, *conditional,
                               "--quiet", "--checkpoint", str(ckpt)], env=script_env(),
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        ours = torch.load(out, weights_only=True)["history"]["loss"]
        theirs = td.checkpoint.read_checkpoint(ckpt)[0]["history"]["loss"]
        assert ours == pytest.approx(theirs, rel=2e-6), conditional


@pytest.mark.parametrize("when", ["after an epoch", "before any epoch"])
def test_ctrl_c_in_the_ddp_script_says_what_was_saved(when, tmp_path, torch):
    """SIGINT (Ctrl-C) as training runs: one message, no traceback, exit 130, and --out whole
    (the last finished epoch) or absent, nothing half-written beside it."""
    import signal
    import time

    out = tmp_path / "run.pt"
    steps = "1" if when == "after an epoch" else "100000"
    process = subprocess.Popen([sys.executable, str(EXAMPLE), "--epochs", "100000",
                                "--steps-per-epoch", steps, "--seed", "1", "--out", str(out)],
                               env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 120
        if when == "after an epoch":
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        else:
            assert process.stdout.readline().startswith("Training the book's U-Net")
            time.sleep(1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Interrupted"), stderr
    again = f"start again: python {EXAMPLE} --epochs 100000 --steps-per-epoch {steps}"
    assert again.lower() in lines[0].lower()
    if when == "after an epoch":
        from tinyddpm.export import from_torch

        epochs = from_torch(out).epoch
        assert epochs >= 1 and f"{out} holds the model after {epochs} finished epoch(s)" in \
            lines[0] and f"--out {tmp_path / 'run.npz'}" in lines[0]
        assert os.listdir(tmp_path) == ["run.pt"]
    else:
        assert "nothing was saved" in lines[0] and not os.listdir(tmp_path)


# ------------------------------------------------------------------------- the command line

def test_export_to_torch_onnx_and_back(tmp_path, capsys, ort):
    from tinyddpm.export import OnnxModel

    model = build("conditional")
    td.save_checkpoint(tmp_path / "c.npz", model)
    assert main(["export", "--checkpoint", str(tmp_path / "c.npz"), "--to", "torch", "--out",
                 str(tmp_path / "c.pt")]) == 0
    assert "the class-conditional U-Net (weights, epoch 0)" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "c.pt"), "--to", "tinyddpm", "--out",
                 str(tmp_path / "back.npz")]) == 0
    back = td.load_checkpoint(tmp_path / "back.npz", td.build_diffusion_model(num_classes=10))
    assert back["config"] == model.config
    assert main(["export", "--checkpoint", str(tmp_path / "c.pt"), "--to", "onnx", "--out",
                 str(tmp_path / "c.onnx")]) == 0
    assert "OnnxModel(" in capsys.readouterr().out
    inputs, _ = inputs_for("conditional", 3)
    assert_float32_close(OnnxModel(tmp_path / "c.onnx")(inputs), model(inputs).data, "onnx")
    assert main(["sample", "--checkpoint", str(tmp_path / "back.npz"), "--n", "2", "--steps",
                 "2", "--out", str(tmp_path / "g.png")]) == 0


def test_export_uses_the_moving_average_as_sample_does(tmp_path, capsys, torch):
    from tinyddpm.export import from_torch

    model = build("book")
    model.compile(ema=0.9)
    model.ema.update(model.named_parameters())
    model.ema.shadow = {k: v + 1 for k, v in model.ema.shadow.items()}
    td.save_checkpoint(tmp_path / "e.npz", model)
    assert main(["export", "--checkpoint", str(tmp_path / "e.npz"), "--to", "torch",
                 "--recalibrate", "0", "--out", str(tmp_path / "avg.pt")]) == 0
    assert "moving-average weights" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "e.npz"), "--to", "torch", "--no-ema",
                 "--out", str(tmp_path / "raw.pt")]) == 0
    avg, raw = from_torch(tmp_path / "avg.pt"), from_torch(tmp_path / "raw.pt")
    np.testing.assert_array_equal(raw.state_dict()["conv_out.kernel"],
                                  model.state_dict()["conv_out.kernel"])
    np.testing.assert_array_equal(avg.state_dict()["conv_out.kernel"],
                                  model.ema.shadow["conv_out.kernel"])


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv,words", [
    (["--pretrained", "book", "--to", "onnx", "--out", "{tmp}/m.pt"],
     "--out '{tmp}/m.pt': the file name must end in .onnx"),
    (["--pretrained", "book", "--to", "torch", "--out", "{tmp}/m.onnx"], "must end in .pt or .pth"),
    (["--pretrained", "book", "--to", "torch", "--out", "{tmp}/nodir/m.pt"], "does not exist"),
    (["--pretrained", "book", "--to", "torch", "--out", "{tmp}"], "is a folder"),
    (["--pretrained", "book", "--to", "tinyddpm", "--out", "{tmp}/m.npz"],
     "--to tinyddpm converts a PyTorch file (.pt"),
    (["--checkpoint", "{tmp}/m.pt", "--to", "torch", "--out", "{tmp}/n.pt"],
     "is a PyTorch file already"),
    (["--to", "torch", "--out", "{tmp}/m.pt"], "export needs --checkpoint FILE"),
    (["--pretrained", "book", "--to", "torch", "--no-ema", "--out", "{tmp}/m.pt"],
     "--no-ema: "),
])
def test_export_usage_errors(argv, words, tmp_path, capsys):
    if "--no-ema" in argv:
        pytest.importorskip("torch")  # checked once the model is read
    assert main(["export", *(w.format(tmp=tmp_path) for w in argv)]) == 2
    assert words.format(tmp=tmp_path) in _one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == []


def test_export_to_an_unknown_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--pretrained", "book", "--to", "keras", "--out", str(tmp_path / "m.h5")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "error: argument --to: invalid choice: 'keras'" in last


def test_export_to_a_folder_that_refuses_files(tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["export", "--pretrained", "book", "--to", "onnx", "--out",
                 str(tmp_path / "m.onnx")]) == 2
    assert "cannot write in" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("to,missing", [("onnx", "onnx"), ("onnx", "onnxruntime"),
                                        ("torch", "torch")])
def test_a_missing_optional_package_is_named_with_its_pip_install(to, missing, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails, as if not installed
    suffix = ".onnx" if to == "onnx" else ".pt"
    assert main(["export", "--pretrained", "book", "--to", to, "--out",
                 str(tmp_path / f"m{suffix}")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"export --to {to} needs" in line and '.[export]' in line and not os.listdir(tmp_path)
    assert missing in line.split("pip install ")[1].split(" (")[0].split()  # (and any other one
    from tinyddpm.export import MissingDependency, OnnxModel, to_torch  # missing here)

    with pytest.raises(MissingDependency, match=f"pip install .*{missing}"):
        to_torch(td.build_diffusion_model()) if missing == "torch" else OnnxModel("m.onnx")


def _suggested(line, start="`python -m tinyddpm "):
    """The first command a message suggests (between backquotes), as main()'s argv."""
    import shlex

    return shlex.split(line.split(start, 1)[1].split("`", 1)[0])


def test_onnx_export_of_a_latent_model_suggests_what_works(tmp_path, capsys, monkeypatch, ort):
    from tinyddpm.export import save_torch, to_torch

    monkeypatch.chdir(tmp_path)
    assert main(["export", "--pretrained", "latent", "--to", "onnx", "--out", "l.onnx"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "covers the pixel diffusion U-Nets only" in line and "--to torch" in line
    assert "--resume" not in line and "`python -m tinyddpm sample --pretrained latent`" in line
    save_torch(to_torch(build("latent")), "latent.pt")
    assert main(["export", "--checkpoint", "latent.pt", "--to", "onnx", "--out", "l.onnx"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--resume" not in line and "sample --checkpoint latent.pt" not in line
    assert main(_suggested(line)) == 0  # export --to tinyddpm --out latent.npz
    assert main(["sample", "--checkpoint", "latent.npz", "--n", "2", "--steps", "2", "--out",
                 "g.png"]) == 0
    assert sorted(os.listdir()) == ["g.png", "latent.npz", "latent.pt"]


def test_pytorch_and_onnx_files_are_named_where_a_checkpoint_is_read(tmp_path, capsys,
                                                                     monkeypatch, onnx_files):
    from tinyddpm.export import save_torch, to_torch

    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    save_torch(to_torch(build("book")), "book.pt")
    assert main(["sample", "--checkpoint", "book.pt", "--out", "g.png"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'book.pt' is a PyTorch file" in line and ".npz file" not in line
    assert main(_suggested(line)) == 0 and os.path.exists("book.npz")
    capsys.readouterr()
    assert main(["train", "--epochs", "2", "--init-from", "book.pt"]) == 2
    assert "'book.pt' is a PyTorch file" in _one_error_line(capsys.readouterr().err)
    torch.save({"weights": torch.zeros(3)}, "plain.pt")
    assert main(["sample", "--checkpoint", "plain.pt"]) == 2
    assert "a PyTorch file, but not one of tinyddpm's" in _one_error_line(
        capsys.readouterr().err)
    onnx = str(onnx_files["book"][1])
    for argv in (["sample", "--checkpoint", onnx], ["export", "--checkpoint", onnx, "--to",
                                                     "torch", "--out", "b.pt"]):
        assert main(argv) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "is an ONNX model, not a tinyddpm checkpoint" in line and "OnnxModel(" in line
    assert main(["export", "--checkpoint", onnx, "--to", "tinyddpm", "--out", "b.npz"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "it is an ONNX model, which does not convert back" in line
    assert "already what `sample` takes" not in line
    for path in ("book.pt", onnx):
        assert main(["evaluate", path]) == 2
        assert "is a model, not images" in _one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir()) == ["book.npz", "book.pt", "plain.pt"]


def test_autoencoders_export_both_ways_and_the_next_step_is_true(tmp_path, capsys, torch):
    from tinyddpm.export import from_torch

    ae = build("autoencoder")
    ae_path = tmp_path / "run.autoencoder.npz"
    td.save_checkpoint(ae_path, ae)
    assert main(["export", "--checkpoint", str(ae_path), "--to", "torch", "--out",
                 str(tmp_path / "ae.pt")]) == 0
    assert "the autoencoder (weights, epoch 0)" in capsys.readouterr().out
    back = from_torch(tmp_path / "ae.pt")
    for key, value in ae.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    assert main(["export", "--checkpoint", str(tmp_path / "ae.pt"), "--to", "tinyddpm", "--out",
                 str(tmp_path / "ae_back.npz")]) == 0
    next_step = capsys.readouterr().out.strip().splitlines()[-1]
    assert "Sample it" not in next_step and "holds the autoencoder" in next_step
    again = td.load_checkpoint(tmp_path / "ae_back.npz", build_autoencoder())
    assert again["model_class"] == "Autoencoder"
    # each kind's next step runs: a conditional U-Net back from torch samples with --class all
    td.save_checkpoint(tmp_path / "c.npz", build("conditional"))
    assert main(["export", "--checkpoint", str(tmp_path / "c.npz"), "--to", "torch", "--out",
                 str(tmp_path / "c.pt")]) == 0
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "c.pt"), "--to", "tinyddpm", "--out",
                 str(tmp_path / "c_back.npz")]) == 0
    next_step = capsys.readouterr().out.strip().splitlines()[-1]
    argv = next_step.split("Sample it: python -m tinyddpm ", 1)[1].split()
    assert argv[-2:] == ["--class", "all"]
    assert main([*argv, "--n", "10", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 0
