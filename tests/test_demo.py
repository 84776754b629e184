"""The demo end to end (quick mode) and the shipped model."""
import numpy as np
import pytest
from PIL import Image

import tinyddpm as td


def test_demo_quick_writes_every_output(tmp_path, capsys):
    from tinyddpm.demo import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for step in ("[1] Forward process", "[2] Variance schedule", "[3]", "[4] Generating",
                 "[5] Measuring quality", "FID vs Fashion-MNIST test set", "[6] Latent diffusion",
                 "latent DDIM", "[7] Class-conditional"):
        assert step in out
    expected = {"forward_process.png": None, "schedules.png": None,
                "samples.png": (2 + 3 * 30) * 2, "reverse_process.gif": (2 + 4 * 30) * 2,
                "latent_samples.png": (2 + 3 * 30) * 2,
                "classes.png": ((2 + 2 * 30) * 2, (2 + 10 * 30) * 2)}
    for name, size in expected.items():
        with Image.open(tmp_path / name) as im:
            im.verify()  # a valid image file
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 50
            if isinstance(size, tuple):
                assert im.size == size, name
            elif size is not None:
                assert im.size == (size, size), name
            if name.endswith(".gif"):
                assert im.n_frames == 5  # one frame per DDIM step in quick mode


@pytest.mark.parametrize("kind", ["book", "latent", "conditional"])
def test_shipped_model_loads_and_samples(kind):
    model = td.load_pretrained(kind=kind)
    assert not model.training
    if kind == "book":
        assert model.count_params() == 280_369
    label = [0, 7, 8, 9] if kind == "conditional" else None
    images = td.generate_ddim(model, batch_size=4, steps=5, seed=1, label=label)
    assert images.shape == (4, 28, 28, 1) and np.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05  # not blank


def test_missing_pretrained_file_says_what_to_do(tmp_path, monkeypatch):
    from tinyddpm import pretrained

    monkeypatch.setitem(pretrained.PRETRAINED, "book", tmp_path / "nope.npz")  # a broken install
    with pytest.raises(td.CheckpointError, match="missing from this install"):
        td.load_pretrained()
    with pytest.raises(td.CheckpointError, match="there is no file"):  # a path of one's own
        td.load_pretrained(tmp_path / "mine.npz")


def test_demo_can_train_a_fresh_model(tmp_path, capsys):
    from tinyddpm.demo import main

    assert main(["--quick", "--train-minutes", "0.05", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Training the book's U-Net from scratch" in out and "trained" in out
    with Image.open(tmp_path / "samples.png") as im:
        im.verify()
