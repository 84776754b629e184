"""Command line: ``python -m tinyddpm train ...`` and ``python -m tinyddpm sample ...``."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from ._cli import (HelpFormatter, UsageError, command, parser as new_parser, real_number,
                   whole_number, whole_numbers)
from .checkpoint import CheckpointError
from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SPACINGS, timesteps


def progress_words(epochs_done, batches_done):
    """Where a run stands, in the words both the Ctrl-C message and ``--resume`` use."""
    done = f"{epochs_done} epoch{'s' if epochs_done != 1 else ''} finished"
    return f"{done}, {batches_done} batches into epoch {epochs_done + 1}" if batches_done else done


def resume_command(args, argv, resume=True, **replace):
    """The command that continues this run: the same options as given, plus ``--resume`` (and
    without ``--init-from``, which only applies to a fresh start). ``resume=False``: the command
    that starts it again instead (no ``--resume``). ``replace`` sets options
    (``learning_rate=1e-4``), dropping the value given before."""
    drop = {"--init-from"} | {"--" + k.replace("_", "-") for k in replace} | \
        (set() if resume else {"--resume"})
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in drop and word != "--resume":  # an option with a value: drop both
            skip = True
        elif word.split("=", 1)[0] not in drop:
            words.append(word)
    for key, value in replace.items():
        words += ["--" + key.replace("_", "-"), f"{value:g}" if isinstance(value, float) else value]
    return command("python", "-m", "tinyddpm", *words,
                   *(["--resume"] if resume and "--resume" not in words else []))


# The options that shape a training run, with their defaults: a checkpoint records them, and
# --resume restores them, so that a resumed run is the run it continues. Given again, an option
# must agree with the checkpoint, except the learning rate, which applies from then on (the way
# out of a diverging run).
RUN_OPTIONS = {"batch_size": 32, "steps_per_epoch": None, "learning_rate": 1e-3, "ema": None,
               "seed": None}
TRAIN_OPTIONS = {**RUN_OPTIONS, "model": "book", "learn_sigma": False, "conditional": False,
                 "label_dropout": 0.1}
LATENT_OPTIONS = {**RUN_OPTIONS, "ae_epochs": 4}
CHANGEABLE = {"learning_rate", "ae_epochs"}  # --epochs is a target, never recorded
SHIPPED = ["book", "conditional", "latent", "improved"]  # --pretrained: tinyddpm.pretrained


def _flag(name):
    return "--" + name.replace("_", "-")


def _run_options(args, defaults, saved, ckpt):
    """Set each run option on ``args``: on --resume, the checkpoint's (``saved``); otherwise as
    given, or its default. Returns the lines to announce (a changed learning rate)."""
    notes = []
    for name, default in defaults.items():
        given = getattr(args, name)
        if saved is None or name not in saved:  # a fresh run (or a file from before the record)
            value = default if given is None else given
        elif given is None or given == saved[name]:
            value = saved[name]
        elif name in CHANGEABLE:
            value = given
            notes.append(f"{_flag(name)} {given:g} from now on ({ckpt} was trained with "
                         f"{saved[name]:g})")
        else:
            shown = {True: "on", False: "off", None: "not given"}.get(saved[name], saved[name])
            raise UsageError(f"{_flag(name)} {given}: the run in {ckpt} was trained with "
                             f"{_flag(name)} {shown}, and --resume continues it exactly as it "
                             f"was; drop {_flag(name)}, or start a new run with another "
                             "--checkpoint")
        setattr(args, name, value)
    if args.seed is None:
        args.seed = int(np.random.default_rng().integers(2**31))
    return notes


def _saved_run(header, kind, path, parser):
    """The run options a checkpoint recorded, each checked with the option's own type (as if
    given on the command line). For files from before they were recorded (or written from
    Python): what the header says, the data seed and whether the model is conditional, with a
    notice that the other options are as given now."""
    saved = {}
    if kind in ("book", "conditional", "improved"):
        saved["conditional"] = kind == "conditional"
        saved["model"] = "improved" if kind == "improved" else "book"
        saved["learn_sigma"] = bool(header.get("config", {}).get("learn_sigma"))
    if "run" not in header:
        if "data_seed" in header:
            saved["seed"] = header["data_seed"]
        print(f"note: {path} records no run options (an older tinyddpm, or saved from Python): "
              "the resumed run takes the options given now, or their defaults; give the ones "
              "it was started with (--batch-size, --steps-per-epoch, ...) to continue it "
              "exactly", file=sys.stderr)
        return saved
    types = {a.dest: a.type for a in parser._actions if a.option_strings}
    choices = {a.dest: a.choices for a in parser._actions if a.option_strings}
    for name, value in header["run"].items():
        if name not in types:
            raise CheckpointError(f"{path!r}: the recorded run option {name!r} is unknown; the "
                                  "file is damaged or was edited")
        try:
            ok = (value in choices[name] if choices[name] else
                  isinstance(value, bool) if types[name] is None else value is None or (
                      not isinstance(value, (bool, str)) and types[name](repr(value)) == value))
        except Exception as e:  # argparse's type functions raise ArgumentTypeError
            ok, value = False, f"{value!r} ({e})"
        else:
            value = value if ok else repr(value)
        if not ok:
            raise CheckpointError(f"{path!r}: the recorded run option {_flag(name)} is not "
                                  f"valid: {value}; the file is damaged or was edited")
        if name in ("conditional", "model", "learn_sigma") and name in saved and \
                value != saved[name]:
            raise CheckpointError(f"{path!r}: the recorded run option {_flag(name)} ({value}) "
                                  f"disagrees with the model it holds ({kind}); the file is "
                                  "damaged or was edited")
        saved[name] = value
    return saved


def _expect(path, header, kinds, command_name):
    """A checkpoint of one of ``kinds`` for ``command_name``, or a UsageError that says what the
    file holds and which command takes it."""
    from tinyddpm.checkpoint import checkpoint_kind, describe_kind

    if checkpoint_kind(header) not in kinds:
        raise UsageError(f"`{command_name}` cannot use {path!r}: it {describe_kind(path, header)}")


def _lock_and_check(args, paths, also_written=()):
    """Before any work: lock the run's files against another run, check that they (and
    ``also_written``, e.g. the best-loss file) can be written, and that ``--resume`` has a
    checkpoint (and a fresh run none to overwrite)."""
    from tinyddpm._files import FileLock, LockedError, check_output, in_assets

    for path in [*paths, *also_written]:
        if in_assets(path):
            from tinyddpm.pretrained import PRETRAINED

            kind = next((k for k, p in PRETRAINED.items() if os.path.samefile(p, path)), None) \
                if os.path.exists(path) else None
            start = (f" (to train from its weights: `train --init-from {command(path)}"
                     + (" --model improved --learn-sigma" if kind == "improved" else
                        " --conditional" if kind == "conditional" else "") + "`)"
                     if kind in ("book", "conditional", "improved") and
                     getattr(args, "init_from", False) is None else "")
            raise UsageError(f"--checkpoint {path!r} is in tinyddpm's folder of shipped files, "
                             f"which training would write into: give a --checkpoint of your "
                             f"own{start}")
        try:
            check_output(path, "--checkpoint", (".npz",), need_bytes=16 * 2**20, example="ckpt")
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        for path in paths:
            FileLock(path).acquire("another training run")
    except LockedError as e:
        raise UsageError(str(e)) from None
    if args.resume and not any(os.path.exists(p) for p in paths):
        raise UsageError(f"--resume: no checkpoint at {' or '.join(map(repr, paths))}; start "
                         "without --resume")
    if not args.resume:
        for path in paths:
            if os.path.exists(path):
                raise UsageError(f"{path!r} already exists: pass --resume to continue it, or "
                                 "choose another --checkpoint")


def _nothing_left(model, epochs, ckpt):
    """True (after saying so) when the checkpoint already holds ``epochs`` finished epochs."""
    if model.epoch >= epochs:
        print(f"{ckpt} already holds {progress_words(model.epoch, model.step_in_epoch)} and "
              f"--epochs is {epochs}: "
              f"nothing to train. To train more, raise --epochs (e.g. --epochs "
              f"{model.epoch + 10}) and keep --resume.")
        return True
    return False


def _run_record(args, names):
    return {name: getattr(args, name) for name in names}


def _train(args):
    """``train``, with what an interrupt outside the fit (loading the data) leaves said."""
    try:
        return _train_run(args)
    except KeyboardInterrupt as e:
        _saved_and_how_to_go_on(args, [args.checkpoint])
        return 128 + getattr(e, "signal", signal.SIGINT)


def _train_run(args):
    import tinyddpm as td
    from tinyddpm.checkpoint import checkpoint_kind, read_checkpoint

    ckpt = args.checkpoint
    best_path = os.path.splitext(ckpt)[0] + ".best.npz"
    _lock_and_check(args, [ckpt], [best_path])
    saved, saved_config = None, None
    if args.resume:
        header = read_checkpoint(ckpt)[0]
        _expect(ckpt, header, ("book", "conditional", "improved"), "train")
        saved = _saved_run(header, checkpoint_kind(header), ckpt, args.parser)
        saved_config = header.get("config") or {}
    notes = _run_options(args, TRAIN_OPTIONS, saved, ckpt)
    if args.learn_sigma and args.model != "improved":
        raise UsageError("--learn-sigma applies to the improved U-Net: add --model improved")
    if args.model == "improved" and args.conditional:
        raise UsageError("--model improved has no class input: drop --conditional")
    init = None
    if args.init_from and args.resume:
        raise UsageError("--init-from starts a new run from a model's weights, and --resume "
                         f"continues {ckpt!r} with its own: drop one of them")
    if args.init_from:
        init, init_config = _read_init_from(args.init_from, args.model)
        if args.model == "improved" and bool(init_config.get("learn_sigma")) != args.learn_sigma:
            raise UsageError(f"--init-from {args.init_from!r}: its model "
                             f"{'learns' if not args.learn_sigma else 'does not learn'} its "
                             f"variances: {'add' if not args.learn_sigma else 'drop'} "
                             "--learn-sigma")
        if args.model == "improved":
            saved_config = init_config  # the shape its weights fit
    architecture = _improved_architecture(args, saved_config, resumed=args.resume)
    if args.model == "improved":
        _check_training_memory(args.batch_size, architecture)
    if not args.conditional and args.label_dropout != TRAIN_OPTIONS["label_dropout"]:
        raise UsageError("--label-dropout applies to a class-conditional model (the book's U-Net "
                         "with --conditional): " + ("drop --label-dropout" if
                                                    args.model == "improved" else
                                                    "add --conditional, or drop --label-dropout"))
    (X_full, y_full), _ = td.load_fashion_mnist(args.data_dir)
    (X_train, y_train), (X_valid, y_valid) = td.split_train_valid(X_full, y_full)  # 1/12 valid
    seed, conditional = args.seed, args.conditional
    if args.model == "improved":
        model = td.build_improved_model(seed=seed, learn_sigma=args.learn_sigma, **architecture)
    else:
        model = td.build_diffusion_model(seed=seed, num_classes=10 if conditional else None)
    loss = td.HybridLoss() if args.learn_sigma else td.Huber()
    model.compile(loss=loss, optimizer=td.Nadam(learning_rate=args.learning_rate), ema=args.ema)
    if args.resume:
        td.load_checkpoint(ckpt, model, model.optimizer)
        if _nothing_left(model, args.epochs, ckpt):
            return 0
        model.optimizer.learning_rate = args.learning_rate  # the checkpoint's, or the one given
        print(f"Resuming from {ckpt}: {progress_words(model.epoch, model.step_in_epoch)} "
              f"(data seed {seed})")
        for note in notes:
            print(note)
    elif init is not None:
        names = _init_from(model, args.init_from, init)
        print(f"Started from the weights in {args.init_from}; new: {', '.join(names) or 'none'}")
    labels = {"labels": y_train, "label_dropout": args.label_dropout} if conditional else \
        {"target": "hybrid"} if args.learn_sigma else {}
    train_set = td.prepare_dataset(X_train, args.batch_size, shuffle=True, seed=seed, **labels)
    valid_set = td.prepare_dataset(X_valid, args.batch_size, seed=seed + 1,
                                   **({**labels, "labels": y_valid} if conditional else labels))
    _check_position(model, args.steps_per_epoch or len(train_set), ckpt)
    what = ("the class-conditional U-Net (labels dropped with probability "
            f"{args.label_dropout:g})" if conditional else
            "the improved U-Net with learned variances (hybrid loss)" if args.learn_sigma else
            "the improved U-Net" if args.model == "improved" else "the book's U-Net")
    print(f"Training {what} ({model.count_params():,} weights) on {len(X_train):,} "
          f"images, validating on {len(X_valid):,}; batch {args.batch_size}, seed {seed}")
    callbacks = _checkpoints(model, ckpt, best_path, _run_record(args, TRAIN_OPTIONS))
    start = time.perf_counter()
    code = _fit(model, train_set, valid_set, args, callbacks, args.epochs, ckpt)
    if code:
        return code
    print(f"Done in {time.perf_counter() - start:.0f} s. {_written(ckpt, best_path)}")
    return 0


ARCHITECTURE = ("widths", "attention", "heads", "dropout")  # train's --model improved options


def _check_training_memory(batch_size, architecture):
    """Refuse, before any work, an improved U-Net whose training would not fit in the memory
    this machine has free (each option may be in range while together they need 100s of GB)."""
    from tinyddpm._cli import available_memory
    from tinyddpm.unet_improved import training_memory

    shape = {k: v for k, v in architecture.items() if k in ("widths", "attention", "heads")}
    need, free = training_memory(batch_size, **shape), available_memory()
    if free is not None and need > free:
        raise UsageError(f"--model improved at --batch-size {batch_size} with these widths, "
                         f"attention sides and heads needs about {need / 2**30:,.1f} GiB to "
                         f"train, and {free / 2**30:,.1f} GiB is free: lower --batch-size or "
                         "--widths, or use fewer --heads or attention sides (28x28 costs most)")


def _improved_architecture(args, saved_config, resumed=True):
    """The improved U-Net's shape from --widths, --attention, --heads, --dropout: as given (the
    builder's defaults for those not given), or on --resume the checkpoint's (``resumed``; else
    ``saved_config`` is --init-from's), which a given value must match. Refused for the book's
    U-Net, which has none of them."""
    given = {name: getattr(args, name) for name in ARCHITECTURE if getattr(args, name) is not None}
    if args.model != "improved":
        if given:
            flags = " and ".join(_flag(n) for n in given)
            raise UsageError(f"{flags} only appl{'ies' if len(given) == 1 else 'y'} to the "
                             f"improved U-Net: add --model improved, or drop "
                             f"{'it' if len(given) == 1 else 'them'}")
        return {}
    if given.get("attention") == () and "heads" in given:
        raise UsageError("--heads applies to the attention blocks, and --attention none has "
                         "none: drop --heads, or choose --attention sides")
    if saved_config is None:
        from .unet_improved import check_options

        try:
            check_options(**given)
        except ValueError as e:
            raise UsageError(str(e).replace("build_improved_model: ", "--model improved: ")
                             + "; choose --widths, --attention and --heads that fit") from None
        return given
    saved = {name: saved_config[name] for name in ARCHITECTURE}
    if not resumed:  # --init-from: heads and dropout shape no weight, so a new run may change them
        for name in ("heads", "dropout"):
            if name in given:
                saved[name] = given.pop(name)
        from .unet_improved import check_options

        try:
            check_options(**saved)
        except ValueError as e:
            raise UsageError(str(e).replace("build_improved_model: ", "--init-from's model with "
                                            "these options: ")) from None
    for name, value in given.items():
        same = (sorted(value) == sorted(saved[name]) if name == "attention"  # a set of sides
                else list(value) == list(saved[name]) if isinstance(value, tuple)
                else value == saved[name])
        if not same:
            shown = ",".join(map(str, saved[name])) if isinstance(saved[name], list) \
                else saved[name]
            raise UsageError(
                f"{_flag(name)} differs from the checkpoint's ({shown}): a resumed run keeps its "
                f"model; drop {_flag(name)}, or start a new run without --resume" if resumed else
                f"{_flag(name)} differs from --init-from's model ({shown}): a run started from its "
                f"weights keeps its shape; drop {_flag(name)}")
    return saved


def _check_position(model, steps, ckpt):
    """A checkpoint's place in its epoch must lie inside an epoch of this run."""
    if model.step_in_epoch > steps:
        raise CheckpointError(f"{ckpt!r} says {progress_words(model.epoch, model.step_in_epoch)}"
                              f", but an epoch of this run has {steps} batches; the file is "
                              "damaged or was edited")


def _written(ckpt, best_path):
    """Which files the run left: the latest state, and the best validation loss if saved."""
    words = f"Latest state: {ckpt}"
    return words + (f"; best validation loss: {best_path}" if os.path.exists(best_path) else "")


def _checkpoints(model, ckpt, best_path, run):
    """The latest state (every epoch, and on Ctrl-C) and the best validation loss so far; both
    record the run's options (``run``) and data seed."""
    import tinyddpm as td

    extra = {"data_seed": run["seed"], "run": run}
    latest = td.ModelCheckpoint(ckpt, save_on_interrupt=True, extra=extra)
    best = td.ModelCheckpoint(best_path, save_best_only=True, extra=extra)
    if model.run_history.history.get("val_loss"):  # resumed: the best of the earlier epochs
        best.best = min(model.run_history.history["val_loss"])
    return [latest, best]


def _read_init_from(path, model):
    """The weights and the config of ``--init-from``, checked before any work: the book's U-Net
    (or a class-conditional one) for --model book, an improved U-Net for --model improved."""
    from tinyddpm.checkpoint import KINDS, checkpoint_kind, read_checkpoint

    header, weights, _, _ = read_checkpoint(path)
    kind, config = checkpoint_kind(header), header.get("config") or {}
    if (kind == "improved") != (model == "improved") and kind in ("book", "conditional",
                                                                   "improved"):
        fix = ("drop --model improved" if model == "improved" else "add --model improved" +
               (" --learn-sigma" if config.get("learn_sigma") else ""))
        raise UsageError(f"--init-from {path!r} holds {KINDS[kind][0]}, not a model that "
                         f"--model {model} builds: {fix}")
    _expect(path, header, ("improved",) if model == "improved" else ("book", "conditional"),
            f"train --model {model} --init-from")
    return weights, config


def _init_from(model, path, weights):
    """Copy ``weights`` (read from checkpoint ``path``) into ``model``; those the checkpoint
    lacks (e.g. the class embedding, to fine-tune an unconditional model into a conditional
    one) keep their fresh values. Returns their names."""
    from tinyddpm.checkpoint import CheckpointError

    state = model.state_dict()
    foreign = sorted(set(weights) - set(state))
    wrong = sorted(k for k in weights if k in state and (weights[k].shape != state[k].shape or
                                                         weights[k].dtype != state[k].dtype))
    if foreign or wrong:
        raise CheckpointError(f"--init-from {path!r} does not fit this model: unknown weights "
                              f"{foreign[:5]}, wrong shapes or dtypes {wrong[:5]}")
    model.load_state_dict({**state, **weights})
    return sorted(set(state) - set(weights))


def _fit(model, train_set, valid_set, args, callbacks, epochs, ckpt):
    """model.fit with the command line's answers to Ctrl-C, to a diverging loss and to a
    checkpoint that cannot be written."""
    import tinyddpm as td
    from tinyddpm._files import WriteError

    try:
        model.fit(train_set, epochs=epochs, validation_data=valid_set, callbacks=callbacks,
                  verbose=0 if args.quiet else 1, steps_per_epoch=args.steps_per_epoch,
                  initial_epoch=model.epoch)
    except KeyboardInterrupt as e:
        _saved_and_how_to_go_on(args, [ckpt])
        return 128 + getattr(e, "signal", signal.SIGINT)
    except td.TrainingDiverged as e:
        lower = args.learning_rate / 10
        if os.path.exists(ckpt):
            advice = (f"The last good checkpoint is {ckpt}; continue from it with a lower "
                      f"learning rate:\n  {resume_command(args, args.argv, learning_rate=lower)}")
        else:
            advice = (f"Nothing was saved yet (no epoch finished). Start again with a lower "
                      f"learning rate:\n  "
                      f"{resume_command(args, args.argv, resume=False, learning_rate=lower)}")
        print(f"\nStopped: {e}\n{advice}", file=sys.stderr)
        return 1
    except WriteError as e:
        from tinyddpm.checkpoint import read_checkpoint

        if os.path.exists(ckpt):
            header = read_checkpoint(ckpt)[0]
            advice = (f"{ckpt} still holds {progress_words(header['epoch'], header['step_in_epoch'])}"
                      f"; once the file can be written, continue with: "
                      f"{resume_command(args, args.argv)}")
        else:
            advice = "nothing was saved; once the file can be written, start again"
        print(f"error: {e}. {advice}", file=sys.stderr)
        return 1
    return 0


def _saved_and_how_to_go_on(args, paths):
    """After an interrupt outside a fit (loading data, between the phases): what the run's
    files hold, and the command that goes on. Returns the exit status."""
    from tinyddpm.checkpoint import read_checkpoint

    held = [f"{p} holds {progress_words(h['epoch'], h['step_in_epoch'])}" for p in paths
            if os.path.exists(p) for h in [read_checkpoint(p)[0]]]
    if held:
        print(f"\nInterrupted; {'; '.join(held)}. Continue with:\n"
              f"  {resume_command(args, args.argv)}")
    else:
        print(f"\nInterrupted before anything was saved. Start again with:\n  "
              f"{resume_command(args, args.argv, resume=False)}")


def _train_latent(args):
    """``train-latent``, with what an interrupt between the fits leaves said."""
    try:
        return _train_latent_phases(args)
    except KeyboardInterrupt as e:
        base = os.path.splitext(args.checkpoint)[0]
        _saved_and_how_to_go_on(args, [base + ".autoencoder.npz", args.checkpoint])
        return 128 + getattr(e, "signal", signal.SIGINT)


def _train_latent_phases(args):
    """Phase 1: the autoencoder (reconstruction, MAE); phase 2: the DDPM over its latents."""
    import tinyddpm as td
    from tinyddpm import latent
    from tinyddpm.checkpoint import read_checkpoint

    ckpt = args.checkpoint
    base = os.path.splitext(ckpt)[0]
    ae_path, best_path = base + ".autoencoder.npz", base + ".best.npz"
    _lock_and_check(args, [ckpt, ae_path], [best_path])
    saved = None
    if args.resume:  # the latent model if phase 2 began, else the autoencoder of phase 1
        phase2 = os.path.exists(ckpt)
        path = ckpt if phase2 else ae_path
        header = read_checkpoint(path)[0]
        _expect(path, header, ("latent",) if phase2 else ("autoencoder",), "train-latent")
        saved = _saved_run(header, "latent", path, args.parser)
        if phase2 and "ae_epochs" in saved:
            saved.pop("ae_epochs")  # phase 1 is over: --ae-epochs no longer matters
    notes = _run_options(args, LATENT_OPTIONS, saved, ckpt)
    run = _run_record(args, LATENT_OPTIONS)
    (X_full, _), _ = td.load_fashion_mnist(args.data_dir)
    X_train, X_valid = td.split_train_valid(X_full)
    seed = args.seed
    if args.resume and os.path.exists(ckpt):
        model, _ = latent.model_from_checkpoint(ckpt)
        if _nothing_left(model, args.epochs, ckpt):
            return 0
        model.optimizer.learning_rate = args.learning_rate
        print(f"Resuming the latent model from {ckpt}: "
              f"{progress_words(model.epoch, model.step_in_epoch)} (data seed {seed})")
        for note in notes:
            print(note)
    else:
        ae = latent.build_autoencoder(seed=seed)
        ae.compile(loss="mae", optimizer=td.Nadam(learning_rate=args.learning_rate))
        if args.resume:
            td.load_checkpoint(ae_path, ae, ae.optimizer)
            ae.optimizer.learning_rate = args.learning_rate
            print(f"Resuming the autoencoder from {ae_path}: "
                  f"{progress_words(ae.epoch, ae.step_in_epoch)} (data seed {seed})")
            for note in notes:
                print(note)
        if ae.epoch < args.ae_epochs:
            print(f"Phase 1/2: the autoencoder ({ae.count_params():,} weights, 28x28x1 -> "
                  f"{'x'.join(map(str, ae.latent_shape))}) on {len(X_train):,} images, batch "
                  f"{args.batch_size}, seed {seed}")
            ae_ckpt = td.ModelCheckpoint(ae_path, save_on_interrupt=True,
                                         extra={"data_seed": seed, "run": run})
            ae_batches = latent.image_batches(X_train, args.batch_size, True, seed)
            _check_position(ae, args.steps_per_epoch or len(ae_batches), ae_path)
            code = _fit(ae, ae_batches, latent.image_batches(X_valid, 256), args, [ae_ckpt],
                        args.ae_epochs, ae_path)
            if code:
                return code
        ae.fit_latent_scale(X_train)
        error = float(np.abs(ae.reconstruct(X_valid) - X_valid[..., None]).mean())
        print(f"Autoencoder: validation reconstruction error (mean |x - x_hat|, pixels in [0, 1]) "
              f"{error:.4f}; latent std per channel before scaling {np.round(ae.latent_std, 3)}")
        model = latent.build_latent_model(ae, seed=seed + 1)
        model.compile(loss=td.Huber(), optimizer=td.Nadam(learning_rate=args.learning_rate),
                      ema=args.ema)
    Z_train = model.autoencoder.encode(X_train)
    Z_valid = model.autoencoder.encode(X_valid)
    train_set = td.prepare_dataset(Z_train, args.batch_size, shuffle=True, seed=seed, scale=False)
    valid_set = td.prepare_dataset(Z_valid, args.batch_size, seed=seed + 1, scale=False)
    _check_position(model, args.steps_per_epoch or len(train_set), ckpt)
    print(f"Phase 2/2: the latent U-Net ({model.unet.count_params():,} weights) on "
          f"{len(Z_train):,} latents {Z_train.shape[1:]}, batch {args.batch_size}, seed {seed}")
    callbacks = _checkpoints(model, ckpt, best_path, run)
    start = time.perf_counter()
    code = _fit(model, train_set, valid_set, args, callbacks, args.epochs, ckpt)
    if code:
        return code
    print(f"Done in {time.perf_counter() - start:.0f} s. {_written(ckpt, best_path)}; sample "
          "with: " + command("python", "-m", "tinyddpm", "sample", "--checkpoint", ckpt))
    return 0


def _sample(args):
    import tinyddpm as td
    from tinyddpm._files import atomic_write, check_output
    from tinyddpm.checkpoint import KINDS, checkpoint_kind, read_checkpoint
    from tinyddpm.plotting import save_grid
    from tinyddpm.pretrained import PRETRAINED, model_from_checkpoint

    if (args.checkpoint is None) == (args.pretrained is None):
        raise UsageError("sample needs --checkpoint FILE (a model you trained) or --pretrained "
                         f"{'|'.join(SHIPPED)} (a shipped model)")
    if args.pretrained:
        args.checkpoint = str(PRETRAINED[args.pretrained])
    n_max = 100 if args.class_ is not None and args.class_.lower() == "all" and args.n is None \
        else (args.n or 64)
    try:
        check_output(args.out, "--out", IMAGE_TYPES)
        if args.npy:
            check_output(args.npy, "--npy", (".npy",), need_bytes=n_max * 28 * 28 * 4 + 2**20)
    except ValueError as e:
        raise UsageError(str(e)) from None
    header = read_checkpoint(args.checkpoint)[0]
    _expect(args.checkpoint, header, ("book", "conditional", "improved", "latent"), "sample")
    if args.latent and checkpoint_kind(header) != "latent":
        raise UsageError(f"--latent: {args.checkpoint!r} is not a latent diffusion model, it "
                         f"holds {KINDS[checkpoint_kind(header)][0]}: drop --latent")
    model, header = model_from_checkpoint(args.checkpoint)
    if args.sampler == "iddpm" and not getattr(model, "learns_sigma", False):
        raise UsageError(f"--sampler iddpm uses the variance a model learned, and "
                         f"{args.checkpoint!r} learned none: use --sampler ddpm-respaced, or "
                         "train a model with `python -m tinyddpm train --model improved "
                         "--learn-sigma` (build_improved_model(learn_sigma=True))")
    n, label, per_class = 64 if args.n is None else args.n, None, None
    if args.class_ is not None:
        if getattr(model, "num_classes", None) is None:
            raise UsageError(f"--class: {args.checkpoint!r} holds a model without classes; use "
                             "--pretrained conditional, or train one with `python -m tinyddpm "
                             "train --conditional`")
        if args.class_.lower() == "all":  # one row per class
            per_class = args.n // 10 if args.n else 10
            if args.n is not None and (args.n < 10 or args.n % 10):
                raise UsageError(f"--class all: --n must be a multiple of 10 (one row per class "
                                 f"of the ten), got {args.n}")
            n, label = 10 * per_class, np.repeat(np.arange(10), per_class)
        else:
            try:
                label = td.data.class_index(args.class_)
            except ValueError as e:
                raise UsageError(f"--class: {e}") from None
    T = model.config["T"]
    if args.sampler == "ddpm":
        for option, value in (("--steps", args.steps), ("--spacing", args.spacing)):
            if value is not None:
                raise UsageError(f"{option} applies to the few-step samplers; ddpm takes every "
                                 "step of the slide's loop: drop it")
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim, not {args.sampler}: drop it")
    args.eta = 0.0 if args.eta is None else args.eta
    if args.variance is not None and args.sampler != "ddpm-respaced":
        raise UsageError(f"--variance applies to --sampler ddpm-respaced, not {args.sampler}"
                         + (" (iddpm uses the variance the model learned)"
                            if args.sampler == "iddpm" else "") + ": drop it")
    if args.steps is not None and args.steps > T:
        raise UsageError(f"--steps: this model has T = {T} time steps, so a sampler takes 1 to "
                         f"{T} steps, got {args.steps}")
    if args.guidance is not None and label is None:
        raise UsageError("--guidance applies with --class (a class-conditional model and the "
                         "class to draw): add --class, or drop --guidance")
    args.guidance = 3.0 if args.guidance is None else args.guidance
    used_ema = _weights_for_use(args, model)
    model.eval()
    start = time.perf_counter()
    guide = {"label": label, "guidance": args.guidance} if label is not None else {}
    try:
        images = td.sample(model, n, args.sampler, steps=args.steps, spacing=args.spacing,
                           eta=args.eta, seed=args.seed, progress=True, variance=args.variance,
                           **guide)
    except FloatingPointError as e:
        raise CheckpointError(f"{args.checkpoint!r}: {e}") from None
    took = time.perf_counter() - start
    spacing = args.spacing or SAMPLERS[args.sampler].spacing
    visited = 0 if args.sampler == "ddpm" else len(timesteps(
        T, args.steps or DEFAULT_STEPS, spacing, td.model_schedule(model)[1]))
    what = (f"ddpm, the slide's {T - 1} steps" if args.sampler == "ddpm" else
            f"{args.sampler}, {visited} steps, {spacing} spacing" +
            (f", eta {args.eta:g}" if args.eta else "") +
            (f", variance {args.variance}" if args.variance else ""))
    if label is not None:
        what += (", one class a row" if per_class else f", class {td.CLASS_NAMES[label]}") + \
            f", guidance {args.guidance:g}"
    weights = "moving-average weights" if used_ema else "weights"
    print(f"{n} image{'s' if n != 1 else ''} ({what}) from {args.checkpoint} ({weights}, epoch "
          f"{header.get('epoch')}) in {took:.1f} s")
    if args.npy:  # the array first: the costlier to lose
        array = images[..., 0].astype(np.float32)
        atomic_write(args.npy, lambda f: np.save(f, array))
        print(f"array: {args.npy} (shape {array.shape}, float32 in [0, 1])")
    save_grid(images, args.out, ncols=per_class)
    print(f"grid: {args.out}")
    return 0


# export --to: (the file suffixes, the optional packages it needs, the model kinds it takes)
EXPORT_FORMATS = {
    "torch": ((".pt", ".pth"), ("torch",), ("book", "conditional", "latent", "autoencoder")),
    "onnx": ((".onnx",), ("torch", "onnx", "onnxruntime"), ("book", "conditional")),
    "tinyddpm": ((".npz",), ("torch",), ("book", "conditional", "latent", "autoencoder")),
}


def _export(args):
    """``export``: a tinyddpm checkpoint to a PyTorch file or an ONNX model, or a PyTorch file
    (to ONNX or) back to a tinyddpm checkpoint; every check before any work."""
    from tinyddpm._files import check_output
    from tinyddpm.checkpoint import checkpoint_kind, file_kind, read_checkpoint
    from tinyddpm.export import TORCH_SUFFIXES, MissingDependency, require
    from tinyddpm.pretrained import PRETRAINED

    if (args.checkpoint is None) == (args.pretrained is None):
        raise UsageError("export needs --checkpoint FILE (a model you trained, or a .pt file to "
                         f"convert back) or --pretrained {'|'.join(SHIPPED)} (a shipped one)")
    if args.pretrained:
        args.checkpoint = str(PRETRAINED[args.pretrained])
    ckpt, (suffixes, packages, kinds) = args.checkpoint, EXPORT_FORMATS[args.to]
    from_torch_file = os.path.splitext(ckpt)[1].lower() in TORCH_SUFFIXES
    if args.to == "tinyddpm" and not from_torch_file:
        onnx = os.path.isfile(ckpt) and file_kind(ckpt) in ("onnx", "tinyddpm-onnx")
        raise UsageError(f"--to tinyddpm converts a PyTorch file (.pt: from `export --to torch` "
                         f"or examples/train_torch_ddp.py) back; {ckpt!r} is not one" + (
                             ": it is an ONNX model, which does not convert back (convert the "
                             ".npz checkpoint or the .pt it was exported from)" if onnx else
                             " (a tinyddpm checkpoint, .npz, is what `sample` takes as it is)"
                             if ckpt.lower().endswith(".npz") else ""))
    if args.to == "torch" and from_torch_file:
        raise UsageError(f"{ckpt!r} is a PyTorch file already: --to tinyddpm converts it back, "
                         "--to onnx exports it")
    try:
        check_output(args.out, "--out", suffixes, need_bytes=16 * 2**20, example="model")
        require(*packages, what=f"export --to {args.to}")
    except (MissingDependency, ValueError) as e:
        raise UsageError(str(e)) from None
    start = time.perf_counter()
    if from_torch_file:
        from tinyddpm.export import from_torch

        try:
            model = from_torch(ckpt)
        except (ValueError, OSError) as e:
            raise CheckpointError(str(e)) from None
        header = {"model_class": type(model).__name__, "config": model.config,
                  "epoch": model.epoch, "history": model.run_history.history}
        kind = checkpoint_kind(header)
        if kind not in kinds:
            raise UsageError(_export_refused(args, kind, header))
    else:
        header = read_checkpoint(ckpt)[0]
        kind = checkpoint_kind(header)
        if kind not in kinds:
            raise UsageError(_export_refused(args, kind, header))
        model, header = _model_to_export(ckpt, kind)
    used_ema = _weights_for_use(args, model)
    model.eval()
    out = _write_export(args.to, model, args.out, header)
    size = os.path.getsize(out)
    weights = "moving-average weights" if used_ema else "weights"
    print(f"{args.out} ({size / 2**20:.1f} MiB): {KINDS_WORDS.get(kind, kind)} ({weights}, epoch "
          f"{header.get('epoch', 0)}) from {ckpt}, in {time.perf_counter() - start:.1f} s")
    print(_export_next(args.to, kind, args.out, header))
    return 0


def _model_to_export(path, kind):
    """(model, header) from a tinyddpm checkpoint of ``kind``, as ``sample`` reads it (an
    autoencoder too, which ``sample`` does not take)."""
    from tinyddpm.latent import autoencoder_from_checkpoint
    from tinyddpm.pretrained import model_from_checkpoint

    return (autoencoder_from_checkpoint if kind == "autoencoder" else model_from_checkpoint)(path)


def _export_refused(args, kind, header):
    """Why ``export --to <args.to>`` does not take a model of ``kind``, and what does work."""
    from tinyddpm.checkpoint import describe_kind

    ckpt = args.checkpoint
    if kind == "improved":  # a model the package trains and samples, but has no twin for yet
        how = command("python", "-m", "tinyddpm", "sample", *(
            ["--pretrained", args.pretrained] if args.pretrained else ["--checkpoint", ckpt]),
            "--sampler", "iddpm" if (header.get("config") or {}).get("learn_sigma") else
            DEFAULT_SAMPLER)
        return (f"`export --to {args.to}` cannot use {ckpt!r}: it holds the improved U-Net "
                "(Nichol & Dhariwal 2021), which has no PyTorch or ONNX twin yet (export takes "
                f"the book's U-Net, the class-conditional one and latent models); tinyddpm "
                f"samples it: `{how}`")
    if kind == "other" or args.to != "onnx":
        return f"`export --to {args.to}` cannot use {ckpt!r}: it {describe_kind(ckpt, header)}"
    words = (f"`export --to onnx` covers the pixel diffusion U-Nets only (the book's and the "
             f"class-conditional one); {ckpt!r} holds {KINDS_WORDS[kind]}")
    if kind == "latent":
        words += (", which would be two graphs (its U-Net over latents and the decoder): export "
                  "it to PyTorch with --to torch (both in one module)")
        if args.pretrained:
            how = command("python", "-m", "tinyddpm", "sample", "--pretrained", args.pretrained)
        elif ckpt.lower().endswith(".npz"):
            how = command("python", "-m", "tinyddpm", "sample", "--checkpoint", ckpt)
        else:
            how = None
        return words + (f"; tinyddpm samples it: `{how}`" if how else
                        "; to sample it in tinyddpm, convert it back with `" + command(
                            "python", "-m", "tinyddpm", "export", "--checkpoint", ckpt, "--to",
                            "tinyddpm", "--out", os.path.splitext(os.path.basename(ckpt))[0] +
                            ".npz") + "` and sample the .npz")
    return words + ", which is not a diffusion model: export it to PyTorch with --to torch"


def _write_export(to, model, out, header):
    import tinyddpm as td
    from tinyddpm import export

    if to == "torch":
        return export.save_torch(export.to_torch(model), out, epoch=header.get("epoch", 0),
                                 history=header.get("history") or {})
    if to == "onnx":
        return export.to_onnx(model, out)
    model.ema = model.optimizer = None  # a torch file holds weights only
    return td.save_checkpoint(out, model)


KINDS_WORDS = {"book": "the book's U-Net", "conditional": "the class-conditional U-Net",
               "improved": "the improved U-Net",
               "latent": "the latent diffusion model", "autoencoder": "the autoencoder"}


def _export_next(to, kind, out, header):
    """The line after an export: what to do with the file written, true for its ``kind``."""
    from tinyddpm.checkpoint import KINDS, describe_kind

    if to == "torch":
        back = os.path.splitext(os.path.basename(out))[0] + ".npz"
        return ("Back to tinyddpm: " + command("python", "-m", "tinyddpm", "export",
                                               "--checkpoint", out, "--to", "tinyddpm", "--out",
                                               back) +
                f"; in PyTorch: tinyddpm.export.from_torch / torch.load({out!r}, "
                "weights_only=True)")
    if to == "onnx":
        label = ", label=7" if kind == "conditional" else ""
        return (f"Sample it with tinyddpm's samplers: td.sample(tinyddpm.export.OnnxModel("
                f"{out!r}), 64{label})")
    if kind in KINDS:
        return "Sample it: " + KINDS[kind][2].format(path=command(out))
    return f"{out} {describe_kind(out, header)}"


def _weights_for_use(args, model):
    """The weights ``sample`` and ``export`` use: the moving average where the checkpoint keeps
    one, with the BatchNorm statistics re-estimated for it (``--recalibrate`` batches), unless
    ``--no-ema``; the options that apply only to the average are refused without one. Returns
    whether the average is used."""
    has_average = model.ema is not None and model.ema.shadow is not None
    if args.no_ema and not has_average:
        raise UsageError(f"--no-ema: {args.checkpoint!r} keeps one set of weights, "
                         "no moving average beside them (trained without --ema, or saved with the "
                         "average as its weights, as the shipped models are): drop --no-ema")
    if not has_average or args.no_ema:
        for option, value in (("--recalibrate", args.recalibrate), ("--data-dir", args.data_dir)):
            if value is not None:
                raise UsageError(f"{option} applies to the moving-average weights, which "
                                 f"{'--no-ema turns off' if args.no_ema else 'this model lacks'}"
                                 ": drop it")
    args.recalibrate = 200 if args.recalibrate is None else args.recalibrate
    used_ema = not args.no_ema and model.use_ema_weights()
    if used_ema and args.recalibrate:
        # the BatchNorm statistics in the checkpoint belong to the trained weights, not to their
        # average: re-estimate them (measured after 6 epochs, DDIM-50, 1,000 samples: FID 25.2
        # and 7/10 classes without this step, 12.5 and 10/10 with it)
        from tinyddpm.pretrained import recalibrate_on_training_data

        used = recalibrate_on_training_data(model, args.recalibrate, args.data_dir)
        print(f"BatchNorm statistics re-estimated for the averaged weights ({used} batches)")
    return used_ema


IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _training_options(parser, checkpoint):
    """The options ``train`` and ``train-latent`` share."""
    parser.add_argument("--batch-size", type=whole_number(1, 1024), default=None,
                        help="images a batch, up to 1,024 (training the book's U-Net takes "
                        "about 4 MB of memory an image) (default: 32; with --resume, the "
                        "checkpoint's)")
    parser.add_argument("--learning-rate", type=real_number(0), default=None,
                        help="Nadam learning rate (default: 1e-3; with --resume, the "
                        "checkpoint's, and a rate given applies from then on)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four IDX files (default: the usual places, then "
                        "the embedded subset)")
    parser.add_argument("--checkpoint", default=checkpoint, help="latest-state checkpoint path")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--seed", type=whole_number(0, 2**31 - 1), default=None,
                        help="seed for weights and data order (default: a random one, printed; "
                        "with --resume, the checkpoint's)")
    parser.add_argument("--steps-per-epoch", type=whole_number(1), default=None,
                        help="stop each epoch after this many batches, for quick trials "
                        "(default: the whole training set; with --resume, the checkpoint's)")
    parser.add_argument("--ema", type=real_number(0, 1, low_open=True, high_open=True),
                        default=None, metavar="DECAY",
                        help="keep a moving average of the (diffusion model's) weights for "
                        "sampling, e.g. 0.999 (default: none; with --resume, the checkpoint's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _average_options(parser, data_dir_help="folder with the IDX files, for --recalibrate "
                     "(default: the usual places, then the embedded subset)"):
    """The options about the moving average of the weights (``sample``, ``export`` and
    ``evaluate --nll``)."""
    parser.add_argument("--no-ema", action="store_true",
                        help="use the trained weights even where the checkpoint has an average")
    parser.add_argument("--recalibrate", type=whole_number(0), default=None, metavar="BATCHES",
                        help="with averaged weights, re-estimate BatchNorm statistics on this "
                        "many training batches first (0: don't) (default: 200)")
    parser.add_argument("--data-dir", default=None, help=data_dir_help)


def build_parser():
    parser = new_parser(
        "python -m tinyddpm", "Train the book's diffusion model, sample from it, measure the "
        "samples.",
        epilog="examples:\n"
        "  python -m tinyddpm sample --pretrained book --n 64 --out grid.png   # a shipped model\n"
        "  python -m tinyddpm train --epochs 20 --ema 0.999 --checkpoint ckpt.npz\n"
        "  python -m tinyddpm sample --checkpoint ckpt.npz --steps 50\n"
        "  python -m tinyddpm evaluate samples.npy\n"
        "  python -m tinyddpm export --checkpoint ckpt.npz --to onnx --out model.onnx\n"
        "more entry points:\n"
        "  python -m tinyddpm.demo      the slides' story in a minute, with the shipped models\n"
        "  python -m tinyddpm.grade     the classroom assignments' autograder\n"
        "  python -m tinyddpm.metrics   train or calibrate the classifier behind the FID\n"
        "Each command has its own --help.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command_parser(name, **kwargs):
        return sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)

    train = command_parser(
        "train", help="train a diffusion U-Net on Fashion-MNIST",
        description="Train the book's U-Net (or, with --model improved, the improved one) as a "
        "DDPM on the 55,000/5,000 split of "
        "Fashion-MNIST (the embedded subset where the full set is absent). Saves the latest "
        "state to --checkpoint after every epoch and on Ctrl-C, and the best validation loss to "
        "<checkpoint>.best.npz.")
    train.add_argument("--epochs", type=whole_number(1), required=True,
                       help="total number of epochs, counting those a --resume'd checkpoint holds")
    _training_options(train, "ckpt.npz")
    train.add_argument("--model", choices=["book", "improved"], default=None,
                       help="book: the book's U-Net; improved: residual blocks, GroupNorm, "
                       "self-attention (Nichol & Dhariwal 2021; td.build_improved_model; shape "
                       "it with --widths, --attention, --heads, --dropout) (default: book; with "
                       "--resume, the checkpoint's)")
    improved = "with --model improved: "
    train.add_argument("--widths", type=whole_numbers(3, low=1), default=None, metavar="W,W,W",
                       help=improved + "channels at 28x28, 14x14 and 7x7, each up to 512 and "
                       "divisible by 8 (the GroupNorm groups) and, where attention is, by "
                       "--heads (default: 16,32,64; with --resume, the checkpoint's)")
    train.add_argument("--attention", type=whole_numbers(choices=(28, 14, 7), empty="none",
                                                            example="14,7"),
                       default=None, metavar="SIDES",
                       help=improved + "the resolutions with self-attention, e.g. 14,7, or none "
                       "(default: 7; with --resume, the checkpoint's)")
    train.add_argument("--heads", type=whole_number(1, 64), default=None,
                       help=improved + "attention heads (default: 4; with --resume, the "
                       "checkpoint's)")
    train.add_argument("--dropout", type=real_number(0, 1, high_open=True), default=None,
                       metavar="RATE", help=improved + "dropout inside each residual block "
                       "(default: 0; with --resume, the checkpoint's)")
    train.add_argument("--learn-sigma", action="store_true", default=None,
                       help="with --model improved: also learn the reverse variances, trained "
                       "with the hybrid loss L_simple + 0.001 L_vlb (Nichol & Dhariwal 2021); "
                       "--sampler iddpm then samples with them")
    train.add_argument("--conditional", action="store_true", default=None,
                       help="class-conditional U-Net for classifier-free guidance (sample it "
                       "with --class)")
    train.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                       help="start from these weights: the book's U-Net (e.g. the shipped "
                       "one, to fine-tune it into a conditional one; weights it lacks start "
                       "fresh), or with --model improved an improved U-Net of the same shape")
    train.add_argument("--label-dropout", type=real_number(0, 1, high_open=True), default=None,
                       metavar="P", help="with --conditional: train on 'no class' with "
                       "probability P (default: 0.1; with --resume, the checkpoint's)")
    train.set_defaults(func=_train, parser=train)

    tl = command_parser(
        "train-latent", help="train a latent diffusion model (autoencoder, then a DDPM over its "
        "latents)",
        description="Phase 1 trains an autoencoder (28x28x1 -> 7x7x4 -> 28x28x1, mean absolute "
        "error) and saves it to <checkpoint>.autoencoder.npz; phase 2 normalises its latents and "
        "trains a small U-Net as a DDPM over them, saving the whole model (autoencoder inside) "
        "to --checkpoint after every epoch and on Ctrl-C, and the best validation loss to "
        "<checkpoint>.best.npz. --resume continues whichever phase was interrupted.")
    tl.add_argument("--ae-epochs", type=whole_number(1), default=None,
                    help="autoencoder epochs (phase 1) (default: 4; with --resume, the "
                    "checkpoint's)")
    tl.add_argument("--epochs", type=whole_number(1), required=True,
                    help="latent DDPM epochs in all (phase 2)")
    _training_options(tl, "latent.npz")
    tl.set_defaults(func=_train_latent, parser=tl)

    sample = command_parser(
        "sample", help="generate images from a shipped model or a checkpoint",
        description="Generate images with the slide's full DDPM loop or a few-step sampler "
        "(DPM-Solver++(2M) by default; DDIM, Heun, ...: the README's 'Sampling faster'), and "
        "save them as a PNG grid (and a .npy array). The shipped models: --pretrained book "
        "(the book's U-Net), conditional (one class at a time, with --class), latent, or "
        "improved (learned variances: --sampler iddpm).")
    which = sample.add_mutually_exclusive_group()
    which.add_argument("--pretrained", choices=SHIPPED, default=None,
                       help="sample a shipped model (in tinyddpm/assets/)")
    which.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="sample a model you trained (`train` or `train-latent`)")
    sample.add_argument("--latent", action="store_true",
                        help="expect a latent diffusion model (train-latent); optional, since "
                        "the checkpoint says what it holds")
    sample.add_argument("--class", dest="class_", default=None, metavar="CLASS",
                        help="with a class-conditional model: the class to draw, by name "
                        "('sneaker') or number (7), or 'all' for a grid with one class a row")
    sample.add_argument("--guidance", type=real_number(-100, 100), default=None, metavar="W",
                        help="with --class: classifier-free guidance weight w: eps = eps_uncond + "
                        "w (eps_cond - eps_uncond); 0 unconditional, 1 conditional (default: 3)")
    sample.add_argument("--n", type=whole_number(1, 100_000), default=None,
                        help="number of images, up to 100,000 a run (default: 64; with --class "
                        "all: 100)")
    sample.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                        help="ddpm: the slide's loop, all T - 1 steps; the others take --steps "
                        "(see the README's 'Sampling faster')")
    sample.add_argument("--steps", type=whole_number(1), default=None,
                        help=f"time steps, 1 to T (default: {DEFAULT_STEPS}); heun and "
                        "dpm-solver-2 call the model twice a step")
    sample.add_argument("--spacing", choices=list(SPACINGS), default=None,
                        help="which time steps (default: the sampler's measured best)")
    sample.add_argument("--variance", choices=["beta", "beta_tilde"], default=None,
                        help="with --sampler ddpm-respaced: each step's fixed variance, the "
                        "slide's beta_t or the posterior's beta_tilde_t (default: beta)")
    sample.add_argument("--eta", type=real_number(0, 1), default=None,
                        help="with --sampler ddim: 0 deterministic, 1 as much noise as DDPM "
                        "(default: 0)")
    sample.add_argument("--seed", type=whole_number(0, 2**31 - 1), default=None,
                        help="seed of the starting noise (default: a random one)")
    sample.add_argument("--out", default="grid.png", help="PNG grid path")
    sample.add_argument("--npy", default=None,
                        help="also save an (n, 28, 28) float32 array here (default: don't)")
    _average_options(sample)
    sample.set_defaults(func=_sample, parser=sample)

    export = command_parser(
        "export", help="convert a model to PyTorch or ONNX, or a PyTorch file back",
        description="Write a trained model (--checkpoint, or a shipped one with --pretrained) "
        "as a PyTorch file (--to torch: the weights and the config, for "
        "tinyddpm.export.from_torch or torch.load(weights_only=True)) or an ONNX model (--to "
        "onnx: opset 17, dynamic batch, checked with onnxruntime against tinyddpm's outputs; "
        "sample it with tinyddpm.export.OnnxModel), or a PyTorch file (.pt, from --to torch or "
        "examples/train_torch_ddp.py) back as a tinyddpm checkpoint (--to tinyddpm), which "
        "`sample`, the metrics and the lessons take. Needs the optional packages (pip install "
        "torch onnx onnxruntime). The weights written are those `sample` uses: the moving "
        "average where the checkpoint keeps one (--no-ema for the trained ones).",
        epilog="examples:\n"
        "  python -m tinyddpm export --pretrained book --to onnx --out book.onnx\n"
        "  python -m tinyddpm export --checkpoint ckpt.npz --to torch --out ckpt.pt\n"
        "  python -m tinyddpm export --checkpoint ddp.pt --to tinyddpm --out ddp.npz")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="a tinyddpm checkpoint (.npz), or a PyTorch file (.pt) to convert")
    which.add_argument("--pretrained", choices=SHIPPED, default=None,
                       help="a shipped model (in tinyddpm/assets/)")
    export.add_argument("--to", choices=list(EXPORT_FORMATS), required=True,
                        help="torch (.pt), onnx (.onnx) or tinyddpm (.npz, from a .pt file)")
    export.add_argument("--out", required=True, help="the file to write")
    _average_options(export)
    export.set_defaults(func=_export, parser=export)

    from tinyddpm.metrics import add_evaluate_command
    add_evaluate_command(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # epoch lines reach a log file at once
    from tinyddpm._files import FileLock, WriteError
    from tinyddpm.data import DataError

    from tinyddpm.model import Interrupted

    def stop(signum, frame):  # SIGTERM (kill, timeout) outside training: end as Ctrl-C does
        raise Interrupted(signum)
    signal.signal(signal.SIGTERM, stop)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        print("\nInterrupted.", file=sys.stderr)
        return 128 + getattr(e, "signal", signal.SIGINT)
    except (CheckpointError, DataError, UsageError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        FileLock.release_all()


if __name__ == "__main__":
    sys.exit(main())
