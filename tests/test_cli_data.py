"""What the commands check before any work, and the images they give a checkpoint."""

from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from metricssl.cli_data import (
    check_data_dir,
    check_device,
    check_writable_folder,
    checkpoint_images,
    image_mode,
)


def test_check_device_accepts_what_this_machine_has():
    check_device("auto")
    check_device("cpu")
    check_device(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_check_device_without_cuda_names_the_flag(name):
    with pytest.raises(ValueError, match=f"--device {name}: .*; use --device cpu"):
        check_device(name)


def test_check_device_beyond_the_gpus():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        pytest.skip("needs CUDA")
    with pytest.raises(ValueError, match=f"this machine has {count} CUDA device"):
        check_device(f"cuda:{count}")


def test_check_device_refuses_a_non_device():
    with pytest.raises(ValueError, match="--device 'gpu0': not a torch device"):
        check_device("gpu0")


def test_check_data_dir(tmp_path):
    check_data_dir(None)
    check_data_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-dir '/nonexistent/x': no such folder"):
        check_data_dir("/nonexistent/x")
    (tmp_path / "f").write_text("")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        check_data_dir(tmp_path / "f")


def test_check_writable_folder_creates_nothing(tmp_path):
    check_writable_folder(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out '.*file/run': not a folder \(.*file is a file\)"):
        check_writable_folder(tmp_path / "file" / "run")
    with pytest.raises(ValueError, match=r"--out '.*file': not a folder$"):
        check_writable_folder(tmp_path / "file")


@pytest.mark.parametrize("shape, mode", [((1, 8, 8), "L"), ((3, 32, 32), "RGB")])
def test_image_mode(shape, mode):
    assert image_mode(shape) == mode


def test_image_mode_refuses_other_channel_counts():
    with pytest.raises(ValueError, match="4-channel"):
        image_mode((4, 8, 8))


@pytest.fixture
def folder(tmp_path):
    """Two classes of RGB images of different sizes."""
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            image = rng.integers(0, 256, (10 + i, 14, 3), dtype=np.uint8)
            pil.fromarray(image).save(tmp_path / cls / f"{i}.png")
    return tmp_path


def _args(**kwargs):
    defaults = {"data": None, "dataset": None, "data_dir": None, "download": False}
    return Namespace(**{**defaults, **kwargs})


def test_a_folder_at_the_checkpoints_channels_and_size(folder):
    method = SimpleNamespace(input_shape=(1, 8, 6))
    images = checkpoint_images(method, _args(data=str(folder)), "test")
    batch, labels = next(images.data.batches(torch.arange(6), 6))
    assert batch.shape == (6, 1, 8, 6) and batch.dtype == torch.uint8
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1] == labels.tolist()
    assert images.class_names == ["cat", "dog"]
    assert images.paths == [str(folder / c / f"{i}.png") for c in ("cat", "dog") for i in range(3)]
    assert images.description == str(folder)


def test_image_files_are_unlabelled(folder):
    method = SimpleNamespace(input_shape=(3, 4, 4))
    files = [str(folder / "dog" / "2.png"), str(folder / "cat" / "0.png")]
    images = checkpoint_images(method, _args(), "test", data=files)
    batch, _ = next(images.data.batches(torch.arange(2), 2))
    assert batch.shape == (2, 3, 4, 4)
    assert images.labels is None and images.paths == files


def test_a_named_dataset_split():
    method = SimpleNamespace(input_shape=(1, 8, 8))
    images = checkpoint_images(method, _args(dataset="digits"), "test")
    assert len(images.data) == 359 and images.description == "digits test"
    assert images.paths is None and images.class_names is None


def test_a_missing_named_dataset_names_the_flags(tmp_path):
    method = SimpleNamespace(input_shape=(3, 32, 32))
    args = _args(dataset="cifar10", data_dir=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match="on the command line: --data-dir FOLDER, or --download"
    ):
        checkpoint_images(method, args, "test")
