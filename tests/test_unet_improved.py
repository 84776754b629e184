"""The improved U-Net (unet_improved.py): shapes, its gradient against central differences
(float64, a tiny configuration), per-image normalisation, dropout only in training, the errors."""
import os

import numpy as np
import pytest

from tinyddpm.checkpoint import read_checkpoint
from tinyddpm.tensor import Tensor
from tinyddpm.testing import gradcheck
from tinyddpm.unet_improved import AttentionBlock, ResBlock, build_improved_model

rng = np.random.default_rng(0)


def inputs(n=2, T=10):
    return {"X_noisy": rng.standard_normal((n, 28, 28, 1)).astype(np.float32),
            "time": rng.integers(0, T + 1, n)}


def tiny(**options):
    options = {"attention": (14, 7), **options}     # both attention sides, so both are tested
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


@pytest.mark.parametrize("options,message", [
    ({"attention": (13,)}, "attention: sides among 28, 14, 7"),
    ({"attention": (7, 7)}, "attention: sides among 28, 14, 7"),
    ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ({"dropout": -0.1}, r"dropout must lie in \[0, 1\)"),
    ({"heads": 0}, "heads must be a whole number >= 1"),
    ({"heads": 2.0}, "heads must be a whole number >= 1, got 2.0"),
    ({"heads": True}, "heads must be a whole number >= 1, got True"),
    ({"groups": 0}, "groups must be a whole number >= 1"),
    ({"dropout": "0.1"}, r"dropout must be a number in \[0, 1\), got '0.1'"),
    ({"widths": (8, 8, 520)}, r"widths must be whole numbers in 1..512"),
    ({"widths": (100_000, 8, 8)}, r"widths must be whole numbers in 1..512"),
    ({"seed": -1}, r"seed must be a whole number in 0..4294967295, got -1"),
    ({"attention": 7}, r"attention must be a tuple of sides, e.g. \(7,\) or \(14, 7\)"),
    ({"widths": "16,32,64"}, "widths must be 3 whole numbers"),
    ({"widths": (16.5, 32, 64)}, "widths must be 3 whole numbers"),
    ({"learn_sigma": "yes"}, "learn_sigma must be True or False"),
    ({"widths": (0, 8, 8)}, "widths must be whole numbers in 1..512"),
])
def test_options_out_of_range_are_refused_before_building(options, message):
    with pytest.raises(ValueError, match=message):
        build_improved_model(T=10, **{"widths": (4, 8, 8), "groups": 2, "heads": 2, **options})


def test_defaults_are_the_shipped_recipe():
    model = build_improved_model(T=10, seed=0)
    assert model.config["widths"] == [16, 32, 64] and model.config["attention"] == [7]
    assert model.config["dropout"] == 0.0 and model.config["heads"] == 4


# ------------------------------------------------------------------ checkpoints and the command line
@pytest.fixture
def subset(monkeypatch):
    """The command line on the embedded subset (fast, and the same on every machine)."""
    from tinyddpm import data

    monkeypatch.setattr(data, "SEARCH_DIRS", ())
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)


def test_a_checkpoint_rebuilds_the_improved_model_with_its_options(tmp_path):
    import tinyddpm as td
    from tinyddpm.pretrained import model_from_checkpoint

    model = tiny(dropout=0.2)
    td.save_checkpoint(tmp_path / "m.npz", model)
    again, header = model_from_checkpoint(tmp_path / "m.npz")
    assert again.config == model.config
    batch = inputs()
    np.testing.assert_array_equal(again.eval()(batch).data, model.eval()(batch).data)


@pytest.mark.parametrize("edit,words", [
    ({"heads": 10 ** 9}, "config.heads must be a whole number in 1..64"),
    # each field in range, together impossible: refused from the header, not by the builder
    ({"heads": 3}, "cannot be split into heads=3; the file is damaged or was edited"),
    ({"widths": [4096, 4096, 4096]}, "config.widths must be a list of 1 to 6 widths in 2..512"),
    ({"model": "__import__('os')"}, "config.model must be \"improved\""),
    ({"model_class": "DiffusionUNet"}, "model_class 'DiffusionUNet' and its config (model "
     "'improved') disagree"),
])
def test_an_edited_improved_config_is_refused_by_field(edit, words, tmp_path, capsys):
    import json

    import tinyddpm as td
    from tinyddpm.__main__ import main
    from tinyddpm.checkpoint import CheckpointError, read_checkpoint

    td.save_checkpoint(tmp_path / "m.npz", tiny())
    with np.load(tmp_path / "m.npz") as f:
        arrays = dict(f)
    header = json.loads(str(arrays["header"]))
    header.update({k: v for k, v in edit.items() if k == "model_class"})
    header["config"].update({k: v for k, v in edit.items() if k != "model_class"})
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(CheckpointError, match=None) as info:
        read_checkpoint(tmp_path / "edited.npz")
    assert words in str(info.value) and "edited.npz" in str(info.value)
    for argv in (["sample", "--n", "2"], ["evaluate", "--nll", "--n", "2"]):
        assert main([*argv, "--checkpoint", str(tmp_path / "edited.npz")]) == 2
        err = capsys.readouterr().err
        assert words in err and "edited.npz" in err and "Traceback" not in err


def test_fine_tune_an_improved_model_with_init_from(tmp_path, subset, capsys):
    from tinyddpm.__main__ import main
    from tinyddpm.checkpoint import read_checkpoint

    def train(*options, out):
        return main(["train", "--epochs", "1", "--steps-per-epoch", "1", "--quiet",
                     "--checkpoint", str(tmp_path / out), *options])

    start = str(tmp_path / "a.npz")
    assert train("--model", "improved", "--widths", "8,8,8", "--heads", "2", "--learn-sigma",
                 out="a.npz") == 0
    # the shape comes from the file whose weights it starts from
    assert train("--model", "improved", "--learn-sigma", "--init-from", start, out="b.npz") == 0
    assert "Started from the weights in" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "b.npz")[0]["config"]["widths"] == [8, 8, 8]
    for options, words in (
            (["--model", "improved", "--learn-sigma", "--widths", "16,16,16"],
             "--widths differs from --init-from's model (8,8,8)"),
            (["--model", "improved"], "its model learns its variances: add --learn-sigma"),
            ([], "add --model improved --learn-sigma")):
        assert train(*options, "--init-from", start, out="c.npz") == 2
        assert words in capsys.readouterr().err
    # heads and dropout shape no weight: a fine-tuning run may change them
    assert train("--model", "improved", "--learn-sigma", "--dropout", "0.1", "--heads", "4",
                 "--init-from", start, out="d.npz") == 0
    config = read_checkpoint(tmp_path / "d.npz")[0]["config"]
    assert (config["dropout"], config["heads"], config["widths"]) == (0.1, 4, [8, 8, 8])
    assert train("--model", "improved", "--learn-sigma", "--init-from", start, "--resume",
                 out="b.npz") == 2
    assert "--init-from starts a new run" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()


def test_a_model_too_large_to_train_here_is_refused_before_any_work(tmp_path, capsys,
                                                                    monkeypatch):
    """Every option in range, together hundreds of GB: refused from the measured cost model."""
    from tinyddpm import _cli
    from tinyddpm.__main__ import main
    from tinyddpm.unet_improved import training_memory

    assert training_memory(512) > 8 * training_memory(32) / 2  # per image, not per run
    assert training_memory(32, attention=(28, 14, 7)) > 2 * training_memory(32)
    monkeypatch.setattr(_cli, "available_memory", lambda: 2 * 2**30)
    monkeypatch.setattr("tinyddpm.load_fashion_mnist", lambda *a, **k: 1 / 0)  # no work
    assert main(["train", "--model", "improved", "--batch-size", "1024", "--epochs", "1",
                 "--checkpoint", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "needs about 7.6 GiB to train, and 2.0 GiB is free" in err
    assert not (tmp_path / "m.npz").exists()


def test_train_the_improved_model_from_the_command_line_and_resume_it(tmp_path, subset, capsys):
    from tinyddpm.__main__ import main
    from tinyddpm.checkpoint import read_checkpoint

    ckpt = str(tmp_path / "c.npz")
    base = ["train", "--checkpoint", ckpt, "--quiet"]
    assert main(base + ["--model", "improved", "--epochs", "1", "--steps-per-epoch", "2",
                        "--batch-size", "4", "--seed", "1"]) == 0
    header = read_checkpoint(ckpt)[0]
    assert header["model_class"] == "ImprovedUNet" and header["run"]["model"] == "improved"
    assert main(base + ["--epochs", "2", "--resume"]) == 0       # the run's options come back
    assert read_checkpoint(ckpt)[0]["epoch"] == 2
    assert main(base + ["--epochs", "3", "--resume", "--model", "book"]) == 2
    assert "--model book: the run in" in capsys.readouterr().err
    assert main(["train", "--model", "improved", "--conditional", "--epochs", "1",
                 "--checkpoint", str(tmp_path / "d.npz")]) == 2
    assert "drop --conditional" in capsys.readouterr().err


def test_the_command_line_shapes_the_improved_model_and_a_resume_keeps_it(tmp_path, monkeypatch,
                                                                          capsys):
    from tinyddpm import data
    from tinyddpm.__main__ import main

    monkeypatch.setattr(data, "SEARCH_DIRS", ())          # the embedded subset: fast, the same
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    ckpt = str(tmp_path / "c.npz")
    shape = ["--widths", "8,16,16", "--attention", "14,7", "--heads", "2", "--dropout", "0.1"]
    run = ["train", "--model", "improved", "--steps-per-epoch", "2", "--batch-size", "4",
           "--seed", "1", "--quiet", "--checkpoint", ckpt]
    assert main([*run, "--epochs", "1", *shape]) == 0
    config = read_checkpoint(ckpt)[0]["config"]
    assert (config["widths"], config["attention"], config["heads"], config["dropout"]) == \
        ([8, 16, 16], [14, 7], 2, 0.1)
    assert main([*run, "--epochs", "2", "--resume"]) == 0              # the checkpoint's shape
    assert main([*run, "--epochs", "3", "--resume", *shape]) == 0      # given again: agrees
    assert read_checkpoint(ckpt)[0]["epoch"] == 3
    capsys.readouterr()
    assert main([*run, "--epochs", "4", "--resume", "--widths", "8,16,32"]) == 2
    assert "--widths differs from the checkpoint's (8,16,16)" in capsys.readouterr().err
    assert read_checkpoint(ckpt)[0]["epoch"] == 3                      # nothing trained
    other = str(tmp_path / "d.npz")
    for words, message in [
            (["--model", "improved", "--widths", "12,24,48"], "width 12 is not divisible"),
            (["--model", "improved", "--widths", "8,16,24", "--heads", "5"],
             "cannot be split into heads=5"),
            (["--dropout", "0.2"], "--dropout only applies to the improved U-Net"),
            (["--model", "improved", "--attention", "13"], "each must be one of 28, 14, 7"),
            (["--model", "improved", "--widths", "8,16"], "expected 3 numbers")]:
        try:
            code = main(["train", "--epochs", "1", "--checkpoint", other, *words])
        except SystemExit as e:                 # argparse's own refusals exit there
            code = e.code
        assert code == 2
        assert message in capsys.readouterr().err
        assert not os.path.exists(other)


def test_exporting_an_improved_checkpoint_writes_the_improved_file_not_the_books(
        tmp_path, monkeypatch):
    import tinyddpm as td
    from tinyddpm import data, pretrained

    monkeypatch.setattr(data, "SEARCH_DIRS", ())
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    from tinyddpm.__main__ import main

    ckpt = str(tmp_path / "c.npz")
    assert main(["train", "--model", "improved", "--learn-sigma", "--widths", "8,16,16",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "1",
                 "--ema", "0.9", "--quiet", "--checkpoint", ckpt]) == 0
    book_before = pretrained.PRETRAINED["book"].read_bytes()
    target = tmp_path / "improved_unet.npz"
    monkeypatch.setitem(pretrained.PRETRAINED, "improved", target)
    info = pretrained.export_pretrained(ckpt)           # the default path: by the file's kind
    assert info["path"] == str(target) and info["weights"] == "moving average"
    assert info["batchnorm_recalibrated_batches"] == 0   # GroupNorm: nothing to re-estimate
    assert pretrained.PRETRAINED["book"].read_bytes() == book_before
    model = td.load_pretrained(kind="improved")
    trained, _ = pretrained.model_from_checkpoint(ckpt)
    trained.use_ema_weights()
    for name, value in trained.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)


def test_the_shipped_improved_model_samples_with_its_learned_variance():
    import tinyddpm as td

    model = td.load_pretrained(kind="improved")
    assert model.learns_sigma and model.config["model"] == "improved"
    images = td.sample(model, 2, "iddpm", steps=3, seed=0)
    assert images.shape == (2, 28, 28, 1) and np.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1
    with pytest.raises(ValueError, match="kind must be one of 'book', 'conditional', 'latent', "
                                         "'improved'"):
        td.load_pretrained(kind="improve")


@pytest.mark.parametrize("to", ["torch", "onnx"])
def test_export_refuses_the_improved_model_and_says_how_to_sample_it(to, tmp_path, capsys):
    pytest.importorskip("torch")
    from tinyddpm.__main__ import main

    out = str(tmp_path / ("m.pt" if to == "torch" else "m.onnx"))
    assert main(["export", "--pretrained", "improved", "--to", to, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "has no PyTorch or ONNX twin yet" in err
    assert "`python -m tinyddpm sample --pretrained improved --sampler iddpm`" in err
    assert not os.path.exists(out)
