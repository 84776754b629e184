"""Bad input gets a clear error before any work, and nothing is lost (issue 20).

Each section is one kind of fault; each case is a row: the input, the error expected (type and
the words its message must contain) and, where files are involved, what must be left unchanged.
"""
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import data as data_mod
from tinyddpm._files import FileLock, LockedError, WriteError, atomic_write, check_output
from tinyddpm.__main__ import main
from tinyddpm.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from tinyddpm.latent import build_autoencoder
from tinyddpm.model import TrainingDiverged
from tinyddpm.pretrained import PRETRAINED

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def subset(monkeypatch):
    """The command line on the embedded subset (fast, and the same on every machine)."""
    monkeypatch.setattr(data_mod, "SEARCH_DIRS", ())
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)


@pytest.fixture(scope="module")
def book():
    return td.load_pretrained()


def _snapshot(path):
    """Every array of a checkpoint, by key."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _same(a, b):
    """The same arrays, bit for bit (NaN included)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
        for k in a)


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


# ================================================================ 1. a resume is the run it continues

TRAIN = ["train", "--conditional", "--batch-size", "8", "--steps-per-epoch", "6",
         "--label-dropout", "0.3", "--epochs", "2", "--seed", "3", "--quiet"]


@pytest.mark.parametrize("signum,where", [(signal.SIGINT, "batch"), (signal.SIGTERM, "batch"),
                                          (signal.SIGINT, "validation")])
def test_a_resume_from_the_printed_command_is_bit_identical(signum, where, tmp_path, subset,
                                                           monkeypatch, capsys):
    """Non-default batch size, steps per epoch and label dropout; a real SIGINT or SIGTERM (what
    kill, timeout and job schedulers send) in epoch 2, mid-batch or during validation; the
    printed command (which the user copies) continues it to the same bits as a run never
    interrupted."""
    straight, broken = str(tmp_path / "straight.npz"), str(tmp_path / "broken.npz")
    assert main(TRAIN + ["--checkpoint", straight]) == 0

    name = "train_step" if where == "batch" else "_mean_loss"
    real, calls = getattr(td.Model, name), []

    def then_signal(self, *args):
        calls.append(1)
        if len(calls) == (9 if where == "batch" else 2):  # in epoch 2
            os.kill(os.getpid(), signum)
        return real(self, *args)
    monkeypatch.setattr(td.Model, name, then_signal)
    capsys.readouterr()
    assert main(TRAIN + ["--checkpoint", broken]) == 128 + signum
    out = capsys.readouterr().out
    holds = "3 batches into epoch 2" if where == "batch" else "6 batches into epoch 2"
    assert f"broken.npz holds 1 epoch finished, {holds}" in out
    printed = out.split("Continue with:")[1].strip().splitlines()[0]
    monkeypatch.setattr(td.Model, name, real)
    words = shlex.split(printed)
    assert words[:3] == ["python", "-m", "tinyddpm"] and "--resume" in words
    assert main(words[3:]) == 0
    assert _same(_snapshot(straight), _snapshot(broken))
    assert not list(tmp_path.glob("*.lock"))


def test_resume_restores_the_run_options_without_repeating_them(tmp_path, subset, capsys):
    ckpt = str(tmp_path / "c.npz")
    assert main(TRAIN[:-3] + ["--epochs", "1", "--seed", "3", "--quiet", "--checkpoint", ckpt]) == 0
    assert main(["train", "--epochs", "2", "--resume", "--quiet", "--checkpoint", ckpt]) == 0
    header = read_checkpoint(ckpt)[0]
    assert header["run"] == {"batch_size": 8, "steps_per_epoch": 6, "learning_rate": 1e-3,
                             "ema": None, "seed": 3, "model": "book", "learn_sigma": False,
                             "conditional": True,
                             "label_dropout": 0.3}
    assert header["batch_size"] == 8 and header["epoch"] == 2
    assert "batch 8, seed 3" in capsys.readouterr().out


@pytest.mark.parametrize("again,words", [
    (["--batch-size", "16"], "--batch-size 16: the run in"),
    (["--steps-per-epoch", "7"], "--steps-per-epoch 7"),
    (["--label-dropout", "0.5"], "--label-dropout 0.5"),
    (["--seed", "4"], "--seed 4"),
    (["--ema", "0.99"], "--ema 0.99"),
])
def test_an_option_that_would_break_exactness_is_refused_on_resume(again, words, tmp_path, subset,
                                                                   capsys, monkeypatch):
    ckpt = str(tmp_path / "c.npz")
    assert main(TRAIN[:-3] + ["--epochs", "1", "--seed", "3", "--quiet", "--checkpoint", ckpt]) == 0
    before = _snapshot(ckpt)
    capsys.readouterr()
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    assert main(["train", "--epochs", "2", "--resume", "--checkpoint", ckpt] + again) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and "--resume continues it exactly" in line
    assert _same(before, _snapshot(ckpt))


def test_a_learning_rate_given_on_resume_applies_and_is_announced(tmp_path, subset, capsys):
    ckpt = str(tmp_path / "c.npz")
    base = ["train", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "0", "--quiet",
            "--checkpoint", ckpt]
    assert main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "2", "--resume", "--learning-rate", "1e-5"]) == 0
    assert "--learning-rate 1e-05 from now on" in capsys.readouterr().out
    header, _, opt, _ = read_checkpoint(ckpt)
    assert float(opt["learning_rate"]) == pytest.approx(1e-5)
    assert header["run"]["learning_rate"] == pytest.approx(1e-5)


def test_label_dropout_without_conditional_is_refused(tmp_path, subset, capsys):
    assert main(["train", "--epochs", "1", "--label-dropout", "0.5",
                 "--checkpoint", str(tmp_path / "c.npz")]) == 2
    assert "add --conditional" in _one_error_line(capsys.readouterr().err)


def test_fit_refuses_to_continue_an_epoch_at_another_batch_size():
    model = td.build_diffusion_model(seed=0).compile()
    X = np.random.default_rng(0).random((32, 28, 28), np.float32)
    model.fit(td.prepare_dataset(X, 8, seed=0), epochs=1, steps_per_epoch=2, verbose=0)
    model.epoch, model.step_in_epoch = 0, 2  # as if interrupted after 2 batches
    with pytest.raises(ValueError, match="batch size 8"):
        model.fit(td.prepare_dataset(X, 16, seed=0), epochs=1, initial_epoch=0, verbose=0)


# ================================================================ 2. divergence keeps the last good state

def _model_and_batch():
    model = td.build_diffusion_model(seed=0)
    X = np.random.default_rng(0).random((4, 28, 28), np.float32)
    return model, td.prepare_batch(X, rng=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflows are the point
@pytest.mark.parametrize("case", ["update overflows", "loss is NaN", "gradients overflow"])
def test_a_diverging_step_leaves_every_weight_and_moment_as_before(case):
    model, (inputs, noise) = _model_and_batch()
    optimizer = td.SGD(learning_rate=0.01, momentum=0.9) if case == "update overflows" \
        else td.Nadam()
    model.compile(loss=td.MeanSquaredError() if case == "gradients overflow" else td.Huber(),
                  optimizer=optimizer, ema=0.9)
    assert np.isfinite(model.train_step(inputs, noise))  # a good step: moments, average exist
    if case == "update overflows":
        optimizer.learning_rate = 1e300  # inf in float32
    before = model.state_dict()
    slots_before = optimizer.state_dict()
    ema_before = model.ema.state_dict()
    if case == "loss is NaN":
        noise = np.full_like(noise, np.nan)
    if case == "gradients overflow":
        noise = np.full_like(noise, 3e37)
    with pytest.raises(TrainingDiverged, match="last good step"):
        model.fit([(inputs, noise)], epochs=1, verbose=0)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(np.isfinite(v).all() for v in after.values())
    slots_after = optimizer.state_dict()
    assert all(np.array_equal(slots_before[k], slots_after[k]) for k in slots_before)
    ema_after = model.ema.state_dict()
    assert all(np.array_equal(ema_before[k], ema_after[k]) for k in ema_before)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_run_that_diverges_before_its_first_save_names_no_file(tmp_path, subset, capsys):
    ckpt = tmp_path / "c.npz"
    assert main(["train", "--epochs", "1", "--steps-per-epoch", "20", "--batch-size", "4",
                 "--learning-rate", "1e30", "--seed", "0", "--quiet",
                 "--checkpoint", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Nothing was saved yet" in err
    assert "--learning-rate 1e+29" in err and "--resume" not in err
    assert not ckpt.exists()


# ================================================================ 3. checkpoints are validated

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "good.npz"
    model = td.build_diffusion_model(seed=0)
    model.compile(loss=td.Huber(), optimizer=td.Nadam(), ema=0.999)
    X = np.random.default_rng(0).random((8, 28, 28), np.float32)
    model.fit(td.prepare_dataset(X, 4, seed=0), epochs=1, verbose=0)
    save_checkpoint(path, model, model.optimizer)
    return path


def _edited(src, dst, arrays=None, header=None):
    """A copy of checkpoint ``src`` with some arrays replaced and header fields set."""
    content = _snapshot(src)
    head = json.loads(str(content["header"]))
    head.update(header or {})
    content.update(arrays or {})
    content["header"] = np.array(json.dumps(head))
    np.savez(dst, **content)
    return dst


FIRST_WEIGHT = "conv_in.kernel"


@pytest.mark.parametrize("arrays,header,words", [
    ({f"weights/{FIRST_WEIGHT}": "int32"}, None, "has dtype int32"),
    ({f"weights/{FIRST_WEIGHT}": "float16"}, None, "is float16, but this model's weights are float32"),
    ({f"weights/{FIRST_WEIGHT}": "nan"}, None, "NaN or infinite"),
    ({"ema/shadow/" + FIRST_WEIGHT: "nan"}, None, "NaN or infinite"),
    ({"optimizer/iterations": -1}, None, "optimizer/iterations must be a whole number"),
    ({"optimizer/iterations": 2.5}, None, "optimizer/iterations must be a whole number"),
    ({"optimizer/learning_rate": -1.0}, None, "optimizer/learning_rate must be a number >= 0"),
    ({"ema/decay": 1.5}, None, "ema/decay must be a number in (0, 1)"),
    ({"ema/steps": -2}, None, "ema/steps must be a whole number"),
    (None, {"format_version": "2"}, "'format_version' must be a whole number"),
    (None, {"format_version": 99}, "newer tinyddpm"),
    (None, {"epoch": "three"}, "'epoch' must be a whole number"),
    (None, {"epoch": -1}, "'epoch' must be a whole number"),
    (None, {"step_in_epoch": 1.5}, "'step_in_epoch'"),
    (None, {"history": "x"}, "'history' must be an object of lists"),
    (None, {"history": {"loss": ["a"]}}, "'history'"),
    (None, {"partial_loss_sum": "x"}, "'partial_loss_sum'"),
    (None, {"config": "x"}, "'config' must be a JSON object"),
    (None, {"data_seed": -3}, "'data_seed'"),
    (None, {"run": [1]}, "'run'"),
    (None, {"config": {"T": 4000, "embed_size": 64, "widths": [32, 64, 128],
                       "schedule": {"kind": "quadratic"}}}, "schedule is not valid"),
])
def test_a_damaged_or_edited_checkpoint_is_refused_by_name(arrays, header, words, good_checkpoint,
                                                           tmp_path, capsys):
    source = _snapshot(good_checkpoint)
    replaced = {}
    for key, how in (arrays or {}).items():
        value = source[key]
        replaced[key] = (value.astype(how) if how in ("int32", "float16") else
                         np.full_like(value, np.nan) if how == "nan" else np.array(how))
    path = str(_edited(good_checkpoint, tmp_path / "bad.npz", replaced, header))
    before = _snapshot(path)
    model = td.build_diffusion_model(seed=1)
    model.compile(ema=0.999)
    with pytest.raises(CheckpointError, match=None) as info:
        load_checkpoint(path, model, model.optimizer)
    assert words in str(info.value) and "bad.npz" in str(info.value)
    # the command line: one error line, exit 2, nothing written
    assert main(["sample", "--checkpoint", path, "--out", str(tmp_path / "g.png")]) == 2
    assert words in _one_error_line(capsys.readouterr().err)
    assert _same(before, _snapshot(path)) and not (tmp_path / "g.png").exists()


def test_the_good_checkpoint_itself_loads(good_checkpoint):
    model = td.build_diffusion_model(seed=1).compile(ema=0.999)
    assert load_checkpoint(good_checkpoint, model, model.optimizer)["epoch"] == 1


@pytest.mark.parametrize("content,words", [
    (b"hello, I am a text file\n", "not an .npz archive"),
    (b"", "not an .npz archive"),
    (b"PK\x03\x04 truncated", "damaged, truncated"),
])
def test_a_file_that_is_no_checkpoint_gets_no_advice_to_unpickle(content, words, tmp_path,
                                                                 capsys):
    path = tmp_path / "notes.npz"
    path.write_bytes(content)
    assert main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "g.png")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and "allow_pickle" not in line


@pytest.mark.parametrize("extra,words", [
    ({"stowaway": np.zeros(3, np.float32)}, "it holds 'stowaway', which none has"),
    # 1.6 GB of zeros in a few MB of zip: refused from the array's header, before reading it
    ({"weights/extra": "huge"}, "weights/extra has shape (20000, 20000), more than 16,777,216"),
])
def test_a_checkpoint_holding_more_than_a_model_is_refused_before_its_arrays_are_read(
        extra, words, good_checkpoint, tmp_path, capsys, monkeypatch):
    import zipfile

    content = _snapshot(good_checkpoint)
    path = tmp_path / "bad.npz"
    if "weights/extra" in extra:  # written by hand: the npy header of a big array, no data
        np.savez(path, **content)
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
        header["shape"] = (20000, 20000)
        with zipfile.ZipFile(path, "a") as archive, archive.open("weights/extra.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
    else:
        np.savez(path, **content, **extra)
    read = []
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__",
                        lambda self, key: read.append(key))
    with pytest.raises(CheckpointError, match=None) as info:
        read_checkpoint(path)
    assert words in str(info.value) and "bad.npz" in str(info.value) and read == []
    monkeypatch.undo()
    assert main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "g.png")]) == 2
    assert words in _one_error_line(capsys.readouterr().err)


def test_load_pretrained_names_a_missing_file_and_the_kind_that_was_meant():
    with pytest.raises(CheckpointError, match=r"no file 'improved'; the shipped improved model "
                       r"is load_pretrained\(kind='improved'\)"):
        td.load_pretrained("improved")
    with pytest.raises(CheckpointError, match=r"there is no file 'mine.npz'$"):
        td.load_pretrained("mine.npz")


def test_a_shipped_file_is_never_offered_for_resuming_into(tmp_path, capsys):
    """The hint for a shipped model of the wrong kind fine-tunes a copy (--init-from), never
    `train --resume` on the package's own file."""
    for command in ("train", "train-latent"):  # nor trained into
        assert main([command, "--epochs", "99", "--resume", "--checkpoint",
                     str(PRETRAINED["improved"])]) == 2
        assert "is in tinyddpm's folder of shipped files, which training would write into" in \
            capsys.readouterr().err
    assets = os.path.dirname(PRETRAINED["book"])
    before = {f: os.path.getmtime(os.path.join(assets, f)) for f in os.listdir(assets)}
    for argv in (["sample", "--pretrained", "book", "--out", f"{assets}/samples_ddim100.png"],
                 ["sample", "--pretrained", "book", "--npy", f"{assets}/x.npy"],
                 ["export", "--pretrained", "book", "--to", "torch", "--out", f"{assets}/b.pt"],
                 ["train", "--epochs", "1", "--checkpoint", f"{assets}/mine.npz"]):
        assert main(argv) == 2, argv  # nor written into by any command
        assert "tinyddpm's folder of shipped files" in capsys.readouterr().err
    assert before == {f: os.path.getmtime(os.path.join(assets, f)) for f in os.listdir(assets)}
    assert main(["train", "--epochs", "1", "--init-from", str(PRETRAINED["latent"]),
                 "--checkpoint", str(tmp_path / "mine.npz")]) == 2
    err = capsys.readouterr().err
    assert "shipped with tinyddpm" in err and "--resume" not in err.split("cannot use", 1)[1]
    assert main(["sample", "--pretrained", "improved", "--no-ema"]) == 2
    assert "saved with the average as its weights, as the shipped models are" in \
        capsys.readouterr().err


@pytest.mark.parametrize("content,words", [
    (b"hello, I am a text file\n", "not a NumPy .npy/.npz file"),
    (b"", "not a NumPy .npy/.npz file"),
    ("pickle", "pickled Python objects"),
])
def test_evaluate_refuses_files_that_are_no_arrays_without_unsafe_advice(content, words,
                                                                        tmp_path, capsys):
    path = tmp_path / "samples.npy"
    if content == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    assert main(["evaluate", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and "allow_pickle" not in line
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)


# ================================================================ 4. the schedule belongs to the model

def test_sampling_with_another_schedule_than_the_models_is_an_error(book):
    with pytest.raises(ValueError, match="T=100: this model was trained with T=4000"):
        td.generate_ddim(book, 2, T=100)
    with pytest.raises(ValueError, match="T=100"):
        td.generate(book, 2, T=100, progress=False)
    with pytest.raises(ValueError, match="schedule='linear'"):
        td.model_schedule(book, schedule="linear")
    assert td.model_schedule(book, T=4000) is td.get_schedule(4000)  # agreeing is fine


def test_a_models_schedule_is_recorded_used_by_the_samplers_and_checked_by_fit(tmp_path):
    model = td.build_diffusion_model(T=300, seed=0, schedule="linear").compile()
    assert model.config["schedule"] == {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    assert td.model_schedule(model)[1] is td.get_schedule(300, "linear")[1]
    X = np.random.default_rng(0).random((8, 28, 28), np.float32)
    before = model.state_dict()
    with pytest.raises(ValueError, match="noise schedule of T = 4000 steps that is not this"):
        model.fit(td.prepare_dataset(X, 4), epochs=1, verbose=0)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    abar = td.model_schedule(model)[1]
    model.fit(td.prepare_dataset(X, 4, alpha_cumprod=abar), epochs=1, verbose=0)
    save_checkpoint(tmp_path / "m.npz", model)
    from tinyddpm.pretrained import model_from_checkpoint
    again, _ = model_from_checkpoint(tmp_path / "m.npz")
    assert again.config == model.config
    assert td.model_schedule(again)[1] is abar


def test_a_checkpoint_from_before_the_schedule_was_recorded_is_the_cosine_one():
    header = read_checkpoint(PRETRAINED["book"])[0]
    assert "schedule" not in header["config"]  # the shipped file predates the field
    assert td.load_pretrained().config["schedule"]["kind"] == "cosine"


# ================================================================ 5. every argument is checked where it enters

@pytest.mark.parametrize("call,words", [
    (lambda m: td.generate_ddim(m, -5), "batch_size must be in 1..1000000, got -5"),
    (lambda m: td.generate_ddim(m, 0), "batch_size must be in 1..1000000, got 0"),
    (lambda m: td.generate_ddim(m, 2.5), "batch_size must be a whole number"),
    (lambda m: td.generate_ddim(m, True), "batch_size must be a whole number"),
    (lambda m: td.generate(m, 0, progress=False), "batch_size must be in 1..1000000, got 0"),
    (lambda m: td.generate_ddim(m, 2, steps=0), "steps must be in 1..4000"),
    (lambda m: td.generate_ddim(m, 2, steps=10.5), "steps must be a whole number"),
    (lambda m: td.generate_ddim(m, 2, steps=5000), "steps must be in 1..4000"),
    (lambda m: td.generate_ddim(m, 2, eta=-1), "eta must be >= 0"),
    (lambda m: td.generate_ddim(m, 2, eta=float("nan")), "eta must be a finite number"),
    (lambda m: td.generate_ddim(m, 2, eta=float("inf")), "eta must be a finite number"),
    (lambda m: td.generate_ddim(m, 2, seed=-1), "seed must be >= 0"),
    (lambda m: td.generate_ddim(m, 2, seed=1.5), "seed must be a whole number"),
    (lambda m: td.generate_ddim(m, 2, guidance=float("nan")), "guidance must be a finite"),
    (lambda m: td.generate_ddim(m, 2, clip=-1), "clip must be >= 0"),
    (lambda m: td.generate_ddim(m, 2, callback=3), "callback must be callable"),
    (lambda m: td.generate_ddim(m, 2, label=3), "label: this model is not class-conditional"),
])
def test_sampler_arguments_are_checked_before_any_work(call, words, book):
    with pytest.raises((TypeError, ValueError)) as info:
        call(book)
    assert words in str(info.value)


@pytest.mark.parametrize("make,words", [
    (lambda: td.Nadam(learning_rate=-1), "Nadam: learning_rate must be a finite number >= 0"),
    (lambda: td.Adam(learning_rate=float("nan")), "Adam: learning_rate must be a finite"),
    (lambda: td.SGD(momentum=1.5), "SGD: momentum must be a finite number in [0, 1]"),
    (lambda: td.Nadam(beta_1=1.0), "Nadam: beta_1 must be a finite number in [0, 1)"),
    (lambda: td.Adam(epsilon=-1e-7), "Adam: epsilon must be a finite number >= 0"),
    (lambda: td.Huber(delta=0), "Huber: delta must be a finite number > 0"),
    (lambda: td.build_diffusion_model().compile(ema=1.5), "EMA decay must lie in (0, 1)"),
    (lambda: td.build_diffusion_model().recalibrate_batchnorm([], batches=-1), "batches must"),
    (lambda: td.build_diffusion_model(schedule="quadratic"), "schedule kind must be one of"),
    (lambda: td.build_diffusion_model(schedule={"kind": "cosine", "max_beta": 2}), "max_beta"),
    (lambda: td.set_seed(-1), "seed must be a whole number in 0..4294967295, got -1"),
    (lambda: td.build_improved_model(T=10 ** 9), "T must be a whole number of steps in 1..100,000"),
    (lambda: td.build_diffusion_model(T=0), "T must be a whole number of steps in 1..100,000"),
    (lambda: td.build_diffusion_model(T=10).compile(loss=td.Huber),
     "loss=Huber is the class; pass an instance, loss=td.Huber()"),
    (lambda: td.build_diffusion_model(T=10).compile(optimizer=td.Nadam),
     "optimizer=Nadam is the class; pass an instance, optimizer=td.Nadam()"),
    # Keras habits: fit(x) without y ("Target data is missing" in Keras)
    (lambda: td.build_diffusion_model(T=10).compile().fit(np.zeros((4, 28, 28), np.float32)),
     "fit(): x, of shape (4, 28, 28), has no targets y"),
    (lambda: td.build_improved_model(T=10).compile(loss="mse").fit(
        td.prepare_dataset(np.zeros((4, 28, 28), np.float32), 2, T=10, target="hybrid")),
     "prepared with target='hybrid', for HybridLoss, but this model is compiled with "
     "MeanSquaredError"),
    (lambda: td.build_improved_model(T=10, learn_sigma=True).compile(loss=td.Huber()),
     "loss=Huber(): this model learns its variances"),
])
def test_training_arguments_are_checked_where_they_enter(make, words):
    with pytest.raises((TypeError, ValueError)) as info:
        make()
    assert words in str(info.value)


@pytest.fixture(scope="module")
def conditional():
    from tinyddpm.pretrained import CONDITIONAL_PATH
    return td.load_pretrained(CONDITIONAL_PATH)


@pytest.mark.parametrize("label,words", [
    ([1, 2, 3], "label must be one class or 2 classes"),
    (10, "label: classes must lie in 0..9"),
    (-1, "label: classes must lie in 0..9"),
    ("spaceship", "label: unknown class 'spaceship'"),
    (2.5, "label must be a whole number"),
])
def test_class_labels_are_checked_and_named(label, words, conditional):
    with pytest.raises((TypeError, ValueError)) as info:
        td.generate_ddim(conditional, 2, steps=1, label=label)
    assert words in str(info.value)


def test_a_class_may_be_given_by_name(conditional):
    by_name = td.generate_ddim(conditional, 2, steps=2, seed=0, label="sneaker")
    by_number = td.generate_ddim(conditional, 2, steps=2, seed=0, label=7)
    np.testing.assert_array_equal(by_name, by_number)


@pytest.mark.parametrize("module,argv,option", [
    ("tinyddpm.grade", ["1", "x.py", "--time-limit", "nan"], "--time-limit"),
    ("tinyddpm.demo", ["--steps", "0"], "--steps"),
    ("tinyddpm.pretrained", ["--export", "x.npz", "--recalibrate", "-1"], "--recalibrate"),
    ("tinyddpm.metrics", ["--epochs", "0"], "--epochs"),
    ("tinyddpm.data", ["--seed", "-1"], "--seed"),
])
def test_the_other_entry_points_check_their_options_too(module, argv, option):
    done = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and f"argument {option}" in done.stderr
    assert "Traceback" not in done.stderr


# ================================================================ 6. one checkpoint, one writer

def _hold_lock(path):
    """Another process that holds the lock on ``path`` until killed."""
    code = ("import sys, time; from tinyddpm._files import FileLock; "
            "FileLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_training_run_on_one_checkpoint_is_refused_before_any_work(tmp_path, capsys,
                                                                            monkeypatch):
    ckpt = tmp_path / "c.npz"
    holder = _hold_lock(ckpt)
    try:
        monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
        assert main(["train", "--epochs", "1", "--checkpoint", str(ckpt)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "is in use by another training run (pid" in line and str(holder.pid) in line
        # the Python API: ModelCheckpoint on the same file
        model = td.build_diffusion_model(seed=0).compile()
        X = np.random.default_rng(0).random((8, 28, 28), np.float32)
        before = model.state_dict()
        with pytest.raises(LockedError, match="in use"):
            model.fit(td.prepare_dataset(X, 4), epochs=1, verbose=0,
                      callbacks=[td.ModelCheckpoint(ckpt)])
        assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        holder.kill()
        holder.wait()
    assert not ckpt.exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_notice(tmp_path, subset, capsys):
    ckpt = tmp_path / "c.npz"
    holder = _hold_lock(ckpt)
    holder.kill()  # kill -9: the lock file stays, its lock is gone
    holder.wait()
    assert Path(str(ckpt) + ".lock").exists()
    assert main(["train", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                 "--quiet", "--checkpoint", str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert f"took over the lock on {ckpt} left by pid {holder.pid}" in err
    assert ckpt.exists() and not Path(str(ckpt) + ".lock").exists()  # released at the end


def test_locks_are_per_process_and_reentrant(tmp_path):
    path = tmp_path / "c.npz"
    with FileLock(path), FileLock(path):  # the CLI and its ModelCheckpoint, in one process
        assert Path(str(path) + ".lock").exists()
    assert not Path(str(path) + ".lock").exists()


# ================================================================ 7-8. nothing lost when a write fails

def _disk_full(*args, **kwargs):
    """What a write does on a full disk: some bytes, then ENOSPC."""
    f = args[0]
    f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the options and outputs were checked")


@pytest.mark.parametrize("target", ["npy", "png"])
def test_a_full_disk_keeps_the_previous_sample_files(target, tmp_path, capsys, monkeypatch):
    npy, png = tmp_path / "s.npy", tmp_path / "g.png"
    np.save(npy, np.zeros((2, 28, 28), np.float32))
    png.write_bytes(b"previous picture")
    before = {npy: npy.read_bytes(), png: png.read_bytes()}
    if target == "npy":
        monkeypatch.setattr(np, "save", _disk_full)
    else:
        import matplotlib.pyplot as plt
        monkeypatch.setattr(plt, "imsave", _disk_full)
    code = main(["sample", "--pretrained", "book", "--n", "2", "--steps", "1", "--seed", "0",
                 "--npy", str(npy), "--out", str(png)])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    what = npy if target == "npy" else png
    assert f"could not write {str(what)!r}: the disk is full" in line
    assert "the previous file is unchanged" in line
    assert what.read_bytes() == before[what]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "s.npy"]  # no temp left


def test_a_full_disk_at_the_end_of_an_epoch_keeps_the_last_checkpoint(tmp_path, subset, capsys,
                                                                      monkeypatch):
    ckpt = tmp_path / "c.npz"
    base = ["train", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "0", "--quiet",
            "--checkpoint", str(ckpt)]
    assert main(base + ["--epochs", "1"]) == 0
    before = _snapshot(ckpt)
    capsys.readouterr()
    monkeypatch.setattr(np, "savez", _disk_full)
    assert main(base + ["--epochs", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"could not write {str(ckpt)!r}: the disk is full; the previous file is unchanged" in err
    assert "1 epoch finished" in err and "--resume" in err
    assert _same(before, _snapshot(ckpt))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("argv,words", [
    (["train", "--epochs", "1", "--checkpoint", "{tmp}/file.txt/c.npz"], "does not exist"),
    (["train", "--epochs", "1", "--checkpoint", "{tmp}/c.ckpt"], "must end in .npz"),
    (["train", "--epochs", "1", "--checkpoint", "{tmp}"], "is a folder"),
    (["train-latent", "--epochs", "1", "--checkpoint", "{tmp}/no/l.npz"], "does not exist"),
    (["sample", "--pretrained", "book", "--npy", "{tmp}/nodir/s.npy"], "does not exist"),
    (["sample", "--pretrained", "book", "--out", "{tmp}/nodir/g.png"], "does not exist"),
])
def test_outputs_that_cannot_be_written_are_found_before_the_work(argv, words, tmp_path, capsys,
                                                                  monkeypatch):
    (tmp_path / "file.txt").write_text("x")
    for name in ("load_fashion_mnist", "generate_ddim", "generate", "sample"):
        monkeypatch.setattr(td, name, _no_work)
    assert main([w.format(tmp=tmp_path) for w in argv]) == 2
    assert words in _one_error_line(capsys.readouterr().err)


def test_a_folder_that_refuses_files_is_found_before_the_work(tmp_path, capsys, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["train", "--epochs", "1", "--checkpoint", str(tmp_path / "c.npz")]) == 2
    assert "cannot write in" in _one_error_line(capsys.readouterr().err)


def test_too_little_free_space_is_found_before_the_work(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    assert main(["train", "--epochs", "1", "--checkpoint", str(tmp_path / "c.npz")]) == 2
    assert "MiB free" in _one_error_line(capsys.readouterr().err)


def test_temp_files_of_killed_writers_are_cleaned(tmp_path):
    target = tmp_path / "c.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".c.npz.tmp-{dead}-abc"
    legacy = tmp_path / ".tmp-xyz.npz"
    alive = tmp_path / f".c.npz.tmp-{os.getppid()}-def"  # a live writer's: kept
    for p in (stale, legacy, alive):
        p.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    atomic_write(target, lambda f: f.write(b"done"))
    assert target.read_bytes() == b"done"
    assert not stale.exists() and not legacy.exists() and alive.exists()


def test_write_errors_name_the_file_and_the_reason(tmp_path):
    def denied(f):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(WriteError, match=r"could not write .*x\.bin': permission denied"):
        atomic_write(tmp_path / "x.bin", denied)
    with pytest.raises(ValueError, match="is a folder"):
        check_output(tmp_path, "--out")


# ================================================================ 9. the data search never crashes

def _deny(monkeypatch, method, folder):
    """Make Path.<method> raise PermissionError for the paths in ``folder`` (as root, real
    permission bits are not enforced)."""
    real = getattr(Path, method)

    def denied(self):
        if self.parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, method, denied)


def test_an_unreadable_default_data_folder_is_skipped_with_a_notice(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    monkeypatch.setattr(data_mod, "SEARCH_DIRS", (str(locked),))
    _deny(monkeypatch, "is_file", locked)
    (X, _), _ = td.load_fashion_mnist()
    err = capsys.readouterr().err
    assert f"skipped {locked} (Permission denied)" in err and "embedded subset" in err
    assert len(X) == 4000
    with pytest.raises(td.data.DataError, match="cannot be read"):
        td.load_fashion_mnist(locked)  # named by the user: an error, not a skip


def test_unreadable_files_in_a_default_place_are_skipped_with_a_notice(tmp_path, monkeypatch,
                                                                     capsys):
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in data_mod.FILE_NAMES.values():
        (folder / name).write_bytes(b"")
    monkeypatch.delenv("TINYDDPM_DATA", raising=False)
    monkeypatch.setattr(data_mod, "SEARCH_DIRS", (str(folder),))
    _deny(monkeypatch, "read_bytes", folder)
    (X, _), _ = td.load_fashion_mnist()
    err = capsys.readouterr().err
    assert f"skipped {folder}" in err and "Permission denied" in err and len(X) == 4000


# ================================================================ 10. a file of the wrong kind is named

@pytest.fixture(scope="module")
def autoencoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ae") / "run.autoencoder.npz"
    save_checkpoint(path, build_autoencoder(seed=0))
    return str(path)


@pytest.mark.parametrize("argv,words", [
    (["train", "--epochs", "9", "--resume", "--checkpoint", "{latent}"],  # never trained into
     ["is in tinyddpm's folder of shipped files, which training would write into"]),
    (["train", "--epochs", "9", "--resume", "--checkpoint", "{ae}"],
     ["holds the autoencoder", "train-latent --resume --epochs", "run.npz"]),
    (["train", "--epochs", "9", "--init-from", "{latent}", "--checkpoint", "{tmp}/n.npz"],
     ["`train --model book --init-from` cannot use", "latent diffusion model"]),
    (["sample", "--checkpoint", "{ae}"], ["holds the autoencoder", "generates nothing"]),
    (["sample", "--checkpoint", "{book}", "--latent"], ["holds the book's U-Net: drop --latent"]),
])
def test_a_checkpoint_of_another_kind_is_named_with_the_command_that_takes_it(
        argv, words, tmp_path, autoencoder_file, capsys, monkeypatch):
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    paths = {"latent": str(PRETRAINED["latent"]), "book": str(PRETRAINED["book"]),
             "ae": autoencoder_file, "tmp": str(tmp_path)}
    assert main([w.format(**paths) for w in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert all(w in line for w in words), line
    assert "drop --latent" not in line or "--latent" in argv


def test_train_latent_on_a_pixel_file_points_to_train_not_to_an_option_it_lacks(tmp_path, capsys,
                                                                             monkeypatch):
    import shutil
    run = tmp_path / "run.npz"
    shutil.copy(PRETRAINED["book"], run)
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    assert main(["train-latent", "--epochs", "9", "--resume", "--checkpoint", str(run)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "holds the book's U-Net" in line and "python -m tinyddpm train --resume" in line
    assert "--latent" not in line


def test_sample_finds_a_latent_model_without_being_told(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(PRETRAINED["latent"]), "--n", "2", "--steps",
                 "2", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").exists()


# ================================================================ 12. API errors name the argument

@pytest.mark.parametrize("inputs,words", [
    ({"X_noisy": np.zeros((2, 32, 32, 1), np.float32), "time": np.array([1, 2])},
     "'X_noisy' must have shape (N, 28, 28, 1), received (2, 32, 32, 1)"),
    ({"X_noisy": np.zeros((2, 28, 28, 1), np.float32), "time": np.array([1, 2, 3])},
     "'time' must have shape (2,)"),
    ({"X_noisy": np.zeros((2, 28, 28, 1), np.float32), "time": np.array([1.0, 2.0])},
     "'time' must hold whole numbers"),
    ({"X_noisy": np.zeros((2, 28, 28, 1), np.float32), "time": np.array([1, 4001])},
     "'time' must lie in 0..4000"),
])
def test_the_model_names_the_input_that_is_wrong(inputs, words, book):
    with pytest.raises(ValueError) as info:
        book(inputs)
    assert words in str(info.value)


@pytest.mark.parametrize("label,words", [
    (np.array([1, 2, 3]), "'label' must have shape (2,)"),
    (np.array(["bag", "bag"]), "'label' must hold whole numbers"),
    (np.array([1, 11]), "'label' must lie in 0..10"),
])
def test_the_conditional_model_names_a_wrong_label(label, words, conditional):
    with pytest.raises(ValueError) as info:
        conditional({"X_noisy": np.zeros((2, 28, 28, 1), np.float32), "time": np.array([1, 2]),
                     "label": label})
    assert words in str(info.value)


# ================================================================ no traceback for a user error

@pytest.mark.parametrize("argv", [
    ["sample", "--checkpoint", "README.md"],
    ["sample", "--pretrained", "book", "--out", "nodir/g.png"],
    ["train", "--epochs", "1", "--checkpoint", "nodir/c.npz"],
    ["evaluate", "README.md"],
    ["train", "--epochs", "1", "--resume", "--checkpoint", "tinyddpm/assets/latent_unet.npz"],
])
def test_the_command_line_shows_no_traceback_for_a_user_error(argv):
    done = subprocess.run([sys.executable, "-m", "tinyddpm", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    _one_error_line(done.stderr)



# ================================================================ more cases of the same kinds

def test_a_stale_lock_is_rewritten_from_the_start_and_named_in_full(tmp_path, capsys):
    path = tmp_path / "c.npz"
    lock = Path(str(path) + ".lock")
    lock.write_text("pid 999999 since 2026-01-02 03:04:05\n" + "python -m tinyddpm " * 40)
    with FileLock(path):
        content = lock.read_bytes()
        assert content.startswith(f"pid {os.getpid()} since ".encode()) and b"\0" not in content
    err = capsys.readouterr().err
    assert "left by pid 999999 since 2026-01-02 03:04:05, a run that ended" in err


@pytest.mark.parametrize("edit,words", [
    ({"run": {"batch_size": 0}}, "--batch-size is not valid"),
    ({"run": {"batch_size": "8"}}, "--batch-size is not valid"),
    ({"run": {"ema": 2}}, "--ema is not valid"),
    ({"run": {"learning_rate": -1}}, "--learning-rate is not valid"),
    ({"run": {"label_dropout": 5}}, "--label-dropout is not valid"),
    ({"run": {"seed": 1.5}}, "--seed is not valid"),
    ({"run": {"frobnicate": 1}}, "'frobnicate' is unknown"),
    ({"run": {"conditional": True}}, "--conditional (True) disagrees with the model"),
    ({"config": None}, "config.T is missing"),
    ({"config": {"T": 4000, "embed_size": 10**9, "widths": [32, 64, 128]}}, "embed_size must be"),
    ({"config": {"T": 4000, "embed_size": 64, "widths": [32, 64, 128], "num_classes": -1}},
     "num_classes must be"),
    ({"step_in_epoch": 99999}, "99999 batches into epoch 2, but an epoch of this run has 2"),
])
def test_every_recorded_field_a_resume_uses_is_checked(edit, words, tmp_path, subset, capsys):
    ckpt = tmp_path / "c.npz"
    base = ["train", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "0", "--quiet"]
    assert main(base + ["--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    head = json.loads(str(_snapshot(ckpt)["header"]))
    if "run" in edit:
        head["run"].update(edit["run"])
        edit = {"run": head["run"]}
    bad = _edited(ckpt, tmp_path / "bad.npz", header=edit)
    capsys.readouterr()
    assert main(["train", "--epochs", "3", "--resume", "--checkpoint", str(bad)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert words in line and "bad.npz" in line


def test_a_deeply_nested_header_is_refused_not_a_recursion_error(tmp_path, capsys):
    path = tmp_path / "deep.npz"
    np.savez(path, header=np.array("[" * 100_000 + "]" * 100_000))
    assert main(["sample", "--checkpoint", str(path)]) == 2
    assert "not a readable tinyddpm checkpoint" in _one_error_line(capsys.readouterr().err)


def test_a_checkpoint_without_run_options_is_resumed_with_a_notice(tmp_path, subset, capsys):
    ckpt = tmp_path / "c.npz"
    base = ["train", "--steps-per-epoch", "2", "--batch-size", "4", "--seed", "0", "--quiet"]
    assert main(base + ["--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    head = json.loads(str(_snapshot(ckpt)["header"]))
    del head["run"]
    content = _snapshot(ckpt)
    content["header"] = np.array(json.dumps(head))
    np.savez(ckpt, **content)
    capsys.readouterr()
    assert main(base + ["--epochs", "2", "--resume", "--checkpoint", str(ckpt)]) == 0
    assert "records no run options" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_weights_that_make_the_model_overflow_give_an_error_naming_the_file(tmp_path, capsys):
    content = _snapshot(PRETRAINED["book"])
    key = f"weights/{FIRST_WEIGHT}"
    content[key] = np.full_like(content[key], 3e38)
    path = tmp_path / "huge.npz"
    np.savez(path, **content)
    assert main(["sample", "--checkpoint", str(path), "--n", "2", "--steps", "3",
                 "--out", str(tmp_path / "g.png")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "huge.npz" in line and "NaN or infinite" in line
    assert not (tmp_path / "g.png").exists()


def test_the_autoencoder_refuses_images_of_another_size():
    ae = td.load_pretrained(kind="latent").autoencoder
    with pytest.raises(ValueError, match=r"encode: images must have shape \(N, 28, 28\)"):
        ae.encode(np.zeros((2, 32, 32, 1), np.float32))


def test_an_autoencoder_file_under_another_name_gets_advice_that_works(tmp_path, capsys,
                                                                        monkeypatch):
    path = tmp_path / "wk_ae.npz"
    save_checkpoint(path, build_autoencoder(seed=0))
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    assert main(["train", "--epochs", "2", "--resume", "--checkpoint", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "rename it" in line and "sample it with" not in line


def test_evaluate_given_a_checkpoint_says_to_sample_it_first(capsys):
    assert main(["evaluate", str(PRETRAINED["book"])]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is a tinyddpm checkpoint (a model), not images" in line and len(line) < 400


def test_a_newer_format_version_names_both_versions(good_checkpoint, tmp_path):
    path = _edited(good_checkpoint, tmp_path / "new.npz", header={"format_version": 99})
    with pytest.raises(CheckpointError, match="format version 99, and this tinyddpm"):
        read_checkpoint(path)


def test_a_folder_given_as_checkpoint_gets_a_checkpoint_name_as_example(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--checkpoint", str(tmp_path)]) == 2
    assert "ckpt.npz" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv,words", [
    (["--pretrained", "book", "--guidance", "2"], "--guidance applies with --class"),
    (["--pretrained", "conditional", "--guidance", "2"], "--guidance applies with --class"),
    (["--pretrained", "book", "--sampler", "ddpm", "--steps", "5"], "--steps applies to"),
    (["--pretrained", "book", "--sampler", "ddpm", "--eta", "1"], "--eta applies to"),
    (["--pretrained", "book", "--steps", "4001"], "a sampler takes 1 to 4000 steps"),
    (["--pretrained", "book", "--no-ema"], "--no-ema: "),
    (["--pretrained", "book", "--recalibrate", "5"], "--recalibrate applies to the moving"),
    (["--pretrained", "book", "--data-dir", "/nonexistent"], "--data-dir applies to the moving"),
    (["--pretrained", "conditional", "--class", "all", "--n", "15"], "a multiple of 10"),
])
def test_sample_options_that_would_be_ignored_are_refused(argv, words, tmp_path, capsys,
                                                          monkeypatch):
    for name in ("generate_ddim", "generate", "sample"):
        monkeypatch.setattr(td, name, _no_work)
    assert main(["sample", *argv, "--out", str(tmp_path / "g.png")]) == 2
    assert words in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("model,words", [
    (None, "model must be a tinyddpm model, or a callable"),
    ("book", "load a model first, e.g. td.load_pretrained(kind='book')"),
])
def test_a_sampler_given_no_model_names_the_argument(model, words):
    with pytest.raises(TypeError, match=None) as info:
        td.generate_ddim(model, 2, steps=5)
    assert words in str(info.value)


def test_guidance_without_a_label_is_refused(book):
    with pytest.raises(ValueError, match="guidance applies to a class-conditional model"):
        td.generate_ddim(book, 2, steps=2, guidance=3)


def test_a_checkpoint_that_cannot_be_replaced_is_found_before_the_work(tmp_path, capsys,
                                                                     monkeypatch):
    ckpt = tmp_path / "c.npz"
    ckpt.write_bytes(b"PK")

    def immutable(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", immutable)
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    assert main(["train", "--epochs", "2", "--resume", "--checkpoint", str(ckpt)]) == 2
    assert "cannot be replaced" in _one_error_line(capsys.readouterr().err)


def test_a_named_pipe_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert main(["sample", "--checkpoint", str(fifo)]) == 2
    assert "not a regular file" in _one_error_line(capsys.readouterr().err)
    assert main(["evaluate", str(fifo)]) == 2
    assert "not a regular file" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("arrays,header,words", [
    ({"weights/bn_in.moving_variance": -1.0}, None, "negative values, which a variance cannot"),
    ({"optimizer/v/0": -1.0}, None, "optimizer/v/0 holds negative values"),
    (None, {"format_version": 0}, "'format_version' must be a whole number >= 1"),
    (None, {"epoch": 10**30}, "'epoch' must be a whole number in 0..1,000,000"),
    (None, {"history": {}, "epoch": 1}, None),  # an empty history is fine
    (None, {"history": {"loss": [0.1, 0.2]}}, "2 epochs of loss but the header says 1"),
    (None, {"history": {"loss": [float("nan")]}}, "lists of finite numbers"),
    (None, {"optimizer_class": "SGD"}, "holds the state of a SGD optimizer, not of the Nadam"),
])
def test_values_no_run_could_have_written_are_refused(arrays, header, words, good_checkpoint,
                                                      tmp_path):
    replaced = {}
    source = _snapshot(good_checkpoint)
    for key, value in (arrays or {}).items():
        replaced[key] = np.full_like(source[key], value)
    path = _edited(good_checkpoint, tmp_path / "odd.npz", replaced, header)
    model = td.build_diffusion_model(seed=1).compile(ema=0.999)
    if words is None:
        load_checkpoint(path, model, model.optimizer)
        return
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model, model.optimizer)
    assert words in str(info.value)


def test_a_best_file_that_cannot_be_replaced_is_found_before_the_work(tmp_path, capsys,
                                                                    monkeypatch):
    (tmp_path / "c.best.npz").write_bytes(b"PK")
    real_link = os.link

    def immutable(src, dst):
        if str(src).endswith(".best.npz"):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_link(src, dst)
    monkeypatch.setattr(os, "link", immutable)
    monkeypatch.setattr(td, "load_fashion_mnist", _no_work)
    assert main(["train", "--epochs", "2", "--checkpoint", str(tmp_path / "c.npz")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "c.best.npz" in line and "cannot be replaced" in line


def test_an_interrupt_between_the_latent_phases_says_how_to_go_on(tmp_path, subset, capsys,
                                                                   monkeypatch):
    from tinyddpm import latent
    from tinyddpm.model import Interrupted

    def interrupted(self, *args, **kwargs):
        raise Interrupted(signal.SIGTERM)
    monkeypatch.setattr(latent.Autoencoder, "fit_latent_scale", interrupted)
    ckpt = tmp_path / "lt.npz"
    code = main(["train-latent", "--ae-epochs", "1", "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "4", "--seed", "0", "--quiet", "--checkpoint", str(ckpt)])
    assert code == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "lt.autoencoder.npz holds 1 epoch finished" in out and "--resume" in out
    assert not list(tmp_path.glob("*.lock"))


@pytest.mark.parametrize("model,words", [
    (td.build_diffusion_model, "which makes a model; call it first"),
    (td.Model, "which makes a model; call it first"),
    (lambda inputs: None, "it returned NoneType , not the predicted noise"),
    ("book_unet.npz", "td.load_pretrained('book_unet.npz') for a file"),
    ("conditional", "td.load_pretrained(kind='conditional')"),
])
def test_a_sampler_given_something_that_is_not_a_model_says_what_to_do(model, words):
    with pytest.raises(TypeError) as info:
        td.generate_ddim(model, 2, steps=2)
    assert words in str(info.value)


def test_a_label_for_an_unconditional_model_points_to_the_conditional_one(book):
    with pytest.raises(ValueError, match=r"td.load_pretrained\(kind='conditional'\)"):
        td.generate_ddim(book, 1, steps=1, label=3)


@pytest.mark.parametrize("kwargs,words", [({"guidance": 1e300, "label": 1}, "guidance must lie"),
                                          ({"eta": 100}, "eta must lie in [0, 1]")])
def test_sampler_weights_out_of_their_useful_range_are_refused(kwargs, words, conditional):
    with pytest.raises(ValueError) as info:
        td.generate_ddim(conditional, 1, steps=2, **kwargs)
    assert words in str(info.value)


def test_evaluate_given_an_autoencoder_file_does_not_advise_sampling_it(autoencoder_file,
                                                                        capsys):
    assert main(["evaluate", autoencoder_file]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "holds the autoencoder" in line and "sample --checkpoint" not in line
