"""The command lines as a newcomer meets them: --help with every default, options checked where
they enter (one ``error:`` line naming the option, exit 2), the shipped models by name, printed
commands that can be pasted back, and the same words for where a run stands."""
import argparse
import shlex

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm.__main__ import build_parser, main, progress_words, resume_command


def _parsers():
    """Every parser the package's entry points build: (name, parser)."""
    from tinyddpm import demo, metrics
    from tinyddpm.grade import assign, cli as grade_cli

    top = build_parser()
    found = [("python -m tinyddpm", top)]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"python -m tinyddpm {name}", p) for name, p in action.choices.items()]
    found.append(("python -m tinyddpm.grade", grade_cli.parser()))
    captured = {}

    def keep(self, *a, **k):  # capture the parsers the other main()s build, without running them
        captured[self.prog] = self
        raise SystemExit(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", keep)
        for entry in (demo.main, metrics.main, assign.main):
            with pytest.raises(SystemExit):
                entry([])
    return found + sorted(captured.items())


PARSERS = _parsers()


@pytest.mark.parametrize("name,parser", PARSERS, ids=[n for n, _ in PARSERS])
def test_every_option_has_help_and_shows_its_default(name, parser):
    text = parser.format_help()
    assert "%%" not in text and "%(" not in text
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            continue
        shown = parser._get_formatter()._get_help_string(action) % {"default": default}
        assert "default" in shown, f"{name} {action.option_strings[0]}: default not shown"
        assert shown.split("default")[-1].strip(" :()") in text.replace("\n", " ") or \
            "default" in action.help


def test_top_level_help_names_the_other_entry_points_and_the_shipped_models():
    text = build_parser().format_help()
    for words in ("python -m tinyddpm.demo", "python -m tinyddpm.grade", "--pretrained book"):
        assert words in text


@pytest.mark.parametrize("argv,option", [
    (["sample", "--pretrained", "book", "--n", "0"], "--n"),
    (["sample", "--pretrained", "book", "--n", "-5"], "--n"),
    (["sample", "--pretrained", "book", "--seed", "-1"], "--seed"),
    (["sample", "--pretrained", "book", "--steps", "0"], "--steps"),
    (["sample", "--pretrained", "book", "--steps", "10.5"], "--steps"),
    (["sample", "--pretrained", "book", "--guidance", "nan"], "--guidance"),
    (["sample", "--pretrained", "book", "--eta", "nan"], "--eta"),
    (["sample", "--pretrained", "book", "--eta", "-1"], "--eta"),
    (["sample", "--pretrained", "book", "--recalibrate", "-2"], "--recalibrate"),
    (["sample", "--pretrained", "lots"], "--pretrained"),
    (["sample", "--pretrained", "book", "--checkpoint", "x.npz"], "--checkpoint"),
    (["train", "--epochs", "1", "--batch-size", "0"], "--batch-size"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--epochs", "0"], "--epochs"),
    (["sample", "--pretrained", "book", "--n", "100001"], "--n"),
    (["train", "--epochs", "1", "--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["train", "--epochs", "1", "--learning-rate", "-1"], "--learning-rate"),
    (["train", "--epochs", "1", "--learning-rate", "inf"], "--learning-rate"),
    (["train", "--epochs", "1", "--label-dropout", "3"], "--label-dropout"),
    (["train", "--epochs", "1", "--ema", "1.5"], "--ema"),
    (["train", "--epochs", "1", "--ema", "0"], "--ema"),
    (["train-latent", "--epochs", "1", "--ae-epochs", "0"], "--ae-epochs"),
    (["evaluate", "s.npy", "--batch-size", "0"], "--batch-size"),
    # sizes that would need more memory than the machine has, refused before any work
    (["train", "--epochs", "1", "--batch-size", "1025"], "--batch-size"),
    (["train-latent", "--epochs", "1", "--batch-size", "100000"], "--batch-size"),
    (["evaluate", "--nll", "--pretrained", "book", "--batch-size", "1001"], "--batch-size"),
    (["train", "--epochs", "1", "--ema", "1"], "--ema"),
    (["train", "--epochs", "1", "--seed", "-1"], "--seed"),
    (["sample", "--pretrained", "book", "--eta", "2"], "--eta"),
    (["sample", "--pretrained", "book", "--eta", "1e300"], "--eta"),
    (["sample", "--pretrained", "conditional", "--class", "bag", "--guidance", "1e300"],
     "--guidance"),
])
def test_out_of_range_options_get_one_error_line_naming_them(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m tinyddpm") and "error:" in last and option in last


def test_sample_needs_a_checkpoint_or_a_shipped_model(capsys):
    assert main(["sample"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sample needs --checkpoint FILE") and "--pretrained" in err


def test_sample_a_shipped_model_by_name(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--pretrained", "book", "--n", "4", "--steps", "2", "--seed", "0",
                 "--out", str(out), "--npy", str(tmp_path / "s.npy")]) == 0
    assert "book_unet.npz" in capsys.readouterr().out and out.exists()
    by_path = td.sample(td.load_pretrained(), 4, steps=2, seed=0)[..., 0]  # the same defaults
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), by_path)
    # the latent model needs no --latent when asked for by name
    assert main(["sample", "--pretrained", "latent", "--n", "2", "--steps", "2",
                 "--out", str(tmp_path / "l.png")]) == 0


def test_progress_words_count_finished_epochs_the_same_way_everywhere():
    assert progress_words(0, 23) == "0 epochs finished, 23 batches into epoch 1"
    assert progress_words(1, 0) == "1 epoch finished"
    assert progress_words(2, 5) == "2 epochs finished, 5 batches into epoch 3"


def test_resume_command_keeps_every_option_and_quotes_paths():
    argv = ["train", "--epochs", "3", "--checkpoint", "my runs/ck.npz", "--batch-size", "8",
            "--steps-per-epoch", "5", "--init-from", "base.npz", "--conditional",
            "--label-dropout", "0.2", "--data-dir", "data dir"]
    args = build_parser().parse_args(argv)
    printed = resume_command(args, argv)
    assert "'my runs/ck.npz'" in printed
    words = shlex.split(printed)
    assert words[:3] == ["python", "-m", "tinyddpm"] and words[-1] == "--resume"
    assert words[3:-1] == [w for w in argv if w not in ("--init-from", "base.npz")]


def test_resume_with_nothing_left_says_to_raise_epochs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(td.data, "SEARCH_DIRS", ())
    ckpt = str(tmp_path / "c.npz")
    base = ["train", "--steps-per-epoch", "2", "--checkpoint", ckpt, "--seed", "0", "--quiet"]
    assert main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "1", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 epoch finished" in out and "nothing to train" in out and "--epochs 11" in out


@pytest.mark.parametrize("argv,words", [
    (["sample", "--pretrained", "book", "--steps", "4001"], "--steps: this model has T = 4000"),
    (["sample", "--pretrained", "book", "--out", "{tmp}"], "is a folder"),
    (["sample", "--pretrained", "book", "--out", "{tmp}/x.txt"], "must end in .png"),
    (["sample", "--pretrained", "book", "--out", "{tmp}/no/such/g.png"], "does not exist"),
    (["sample", "--pretrained", "book", "--npy", "{tmp}/s.png"], "must end in .npy"),
    (["sample", "--pretrained", "conditional", "--class", "spaceship"], "--class:"),
    (["sample", "--pretrained", "conditional", "--class", "all", "--n", "7"], "a multiple of 10"),
    (["sample", "--pretrained", "book", "--class", "bag"], "without classes"),
    (["sample", "--pretrained", "book", "--latent"], "not a latent diffusion model"),
    (["sample", "--checkpoint", "{tmp}/none.npz"], "does not exist"),
    (["train", "--epochs", "2", "--resume", "--checkpoint", "{tmp}/none.npz"], "--resume: no "),
    (["train-latent", "--epochs", "2", "--resume", "--checkpoint", "{tmp}/none.npz"],
     "--resume: no "),
])
def test_mistakes_found_after_parsing_get_one_error_line_and_exit_2(argv, words, tmp_path,
                                                                    capsys, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the data was loaded before the options were checked")
    monkeypatch.setattr(td, "load_fashion_mnist", fail)
    assert main([w.format(tmp=tmp_path) for w in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_pickled_file_is_refused_without_advice_to_load_it_unsafely(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    np.savez(path, header=np.array([{"format": "x"}], dtype=object))
    assert main(["sample", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pickled" in err and "unsafe" not in err and "allow_pickle" not in err
