"""Every code block and command of the README runs here, so an example can never drift from the
code. Long runs are shortened by the substitutions in ``SHORTER`` (fewer epochs, steps or images:
the same calls); commands that cannot run inside a test are listed in ``NOT_RUN`` with the reason
(and run elsewhere). A block that is neither run nor listed fails the test. The blocks of the
section "Beyond the laptop" need torch, onnx and onnxruntime: they run in a test of their own,
which skips without them."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
# (kind, text, the "## " section it is in)
ALL_BLOCKS = [(m.group(1), m.group(2), re.findall(r"^## (.*)$", README[:m.start()], re.M)[-1:])
              for m in re.finditer(r"```(\w+)\n(.*?)```", README, re.S)]
# the section whose blocks need the optional packages: they run in test_beyond_the_laptop,
# which skips without them
OPTIONAL = ("Beyond the laptop", ("torch", "onnx", "onnxruntime"))
BLOCKS = [(kind, text) for kind, text, section in ALL_BLOCKS
          if not section or not section[0].startswith(OPTIONAL[0])]
OPTIONAL_BLOCKS = [(kind, text) for kind, text, section in ALL_BLOCKS
                   if section and section[0].startswith(OPTIONAL[0])]

# what the test changes to keep the run short: (text in the README, text run instead)
SHORTER = [
    ("epochs=100", "epochs=1, steps_per_epoch=3"),
    ("td.generate(model, batch_size=32)", "td.generate(model, batch_size=2, progress=False)"),
    ("steps=100, seed=0)", "steps=10, seed=0)"),
    ("--epochs 20 ", "--epochs 1 --steps-per-epoch 2 "),
    ("--epochs 30 ", "--epochs 2 --steps-per-epoch 2 "),
    ("--ae-epochs 4 --epochs 40 ", "--ae-epochs 1 --epochs 1 --steps-per-epoch 2 "),
    ("--n 1000 ", "--n 200 --steps 5 "),
    ("--n 64 ", "--n 8 "),
    # the bound calls the model at all 4,000 steps for each batch: one image, not 100 (~4 min)
    ("evaluate --nll --pretrained book --n 100 ", "evaluate --nll --pretrained book --n 1 "),
]
# commands whose exit status is not 0 by design: (text in the command, status, why)
STATUS = [("--roster names.txt", 1, "a student on the roster has no file: not every one graded")]
# commands that do not run in a test, and why
NOT_RUN = {
    "pip install -e . && python -m tinyddpm.demo": "the demo runs in tests/test_demo.py",
    'pip install -e ".[test]" && python -m pytest -q': "it is this test suite (.ci/run runs it)",
    "python -m pip install notebook": "an install; the lessons run in tests/test_lessons.py",
    "jupyter notebook lessons/": "opens a browser; the lessons run in tests/test_lessons.py",
    "python -m tinyddpm.metrics --train": "trains the classifier for minutes on the full data",
    "python -m tinyddpm.metrics --calibrate": "needs the full data; writes the shipped table",
}


def shorter(text):
    for old, new in SHORTER:
        text = text.replace(old, new)
    return text


def commands(block):
    """The block's commands, continuation lines joined, comments dropped."""
    lines = block.replace("\\\n", " ").splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder to run in, with what the README's commands expect around them."""
    work = tmp_path_factory.mktemp("readme")
    (work / "lessons").symlink_to(REPO / "lessons")
    (work / "examples").symlink_to(REPO / "examples")
    (work / "submissions").mkdir()
    stub = REPO / "lessons" / "assignments" / "03_conv_backward.py"
    (work / "submissions" / "alice.py").write_text(stub.read_text())
    (work / "names.txt").write_text("alice\nbob\n")          # bob has not handed anything in
    return work


def run_python(code, namespace, workdir):
    old = os.getcwd()
    os.chdir(workdir)
    try:
        exec(compile(shorter(code), "README.md", "exec"), namespace)
    finally:
        os.chdir(old)


def test_every_block_is_run_or_listed():
    for kind, block, _ in ALL_BLOCKS:
        assert kind in ("python", "bash"), f"a README block of kind {kind!r}"
    assert OPTIONAL_BLOCKS, f"the README has no section {OPTIONAL[0]!r} any more"
    listed = [c for _, b, _ in ALL_BLOCKS for c in commands(b) if c.startswith(tuple(NOT_RUN))]
    assert len(listed) == len(NOT_RUN), "NOT_RUN names a command the README no longer has"


def test_python_blocks(workdir, monkeypatch):
    import tinyddpm as td

    namespace, checked = {}, False
    blocks = [b for kind, b in BLOCKS if kind == "python"]
    assert len(blocks) >= 5
    for block in blocks:
        run_python(block, namespace, workdir)
        if "X_fast" in block:  # "Train and sample": after fit the model samples in inference
            checked = True     # mode, exactly as the same weights loaded into a fresh model do
            model = namespace["model"]
            assert not model.training
            assert namespace["X_gen"].shape == (2, 28, 28, 1)
            assert namespace["X_fast"].shape[0] == 64
            fresh = td.build_diffusion_model()
            td.save_checkpoint(workdir / "as_trained.npz", model)
            td.load_checkpoint(workdir / "as_trained.npz", fresh)
            np.testing.assert_array_equal(td.generate_ddim(model, 4, steps=5, seed=1),
                                          td.generate_ddim(fresh, 4, steps=5, seed=1))
    assert checked
    # the shipped model's example, the conditional one, the Keras one
    assert namespace["images"].shape == (64, 28, 28, 1)
    assert namespace["sneakers"].shape == (16, 28, 28, 1)
    assert len(namespace["history"].history["val_loss"]) == 3


BASH = [c for kind, b in BLOCKS if kind == "bash" for c in commands(b)
        if not c.startswith(tuple(NOT_RUN))]


def test_bash_commands(workdir):
    """Each command, in README order, in one folder (later ones use what earlier ones wrote)."""
    assert any("train --epochs" in c for c in BASH) and any("grade" in c for c in BASH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    for command in BASH:
        words = shlex.split(shorter(command + " "))
        assert words[0] == "python", command
        done = subprocess.run([sys.executable, *words[1:]], cwd=workdir, env=env, text=True,
                              capture_output=True, timeout=600)
        want = next((status for text, status, _ in STATUS if text in command), 0)
        assert done.returncode == want, \
            f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (workdir / "grid.png").exists() and (workdir / "scores.csv").exists()
    assert (workdir / "feedback" / "bob.md").read_text().count("no submission") >= 1
    assert np.load(workdir / "samples.npy").shape[1:] == (28, 28)


def test_beyond_the_laptop(workdir):
    """The PyTorch and ONNX section, blocks and commands in README order, where torch, onnx
    and onnxruntime are installed (.ci/run's second run)."""
    for package in OPTIONAL[1]:
        pytest.importorskip(package)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    launcher = {"python": [sys.executable],  # torchrun: the module it runs, with this Python
                "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
    namespace = {}
    for kind, block in OPTIONAL_BLOCKS:
        if kind == "python":
            run_python(block, namespace, workdir)
            continue
        for command in commands(block):
            words = shlex.split(shorter(command + " "))
            done = subprocess.run([*launcher[words[0]], *words[1:]], cwd=workdir, env=env,
                                  text=True, capture_output=True, timeout=600)
            assert done.returncode == 0, \
                f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert namespace["images"].shape == (64, 28, 28, 1)
    assert (workdir / "book.onnx").exists() and (workdir / "conditional.pt").exists()
    assert (workdir / "ddp.npz").exists() and (workdir / "ddp_grid.png").exists()
