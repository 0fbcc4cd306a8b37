import sys

import numpy as np
import pytest
import torch

from metricssl.data import image_folder
from metricssl.data.image_folder import ImageFolder, read_image

Image = pytest.importorskip("PIL.Image")


def rgb(seed, size=(6, 5)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_labelled_layout(tmp_path):
    arrays = {}
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            arrays[(cls, i)] = rgb(len(arrays))
            Image.fromarray(arrays[(cls, i)]).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert len(ds) == 5 and ds.targets.tolist() == [0, 0, 1, 1, 1]
    image, label = ds[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 5) and label.item() == 1
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), arrays[("dog", 1)])


def test_unlabelled_layout_grey_mode_jpeg_and_transform(tmp_path):
    Image.fromarray(rgb(0)).save(tmp_path / "a.png")
    Image.fromarray(rgb(1)).save(tmp_path / "b.jpg", quality=95)
    ds = ImageFolder(str(tmp_path), mode="L", transform=lambda x: x[:, :4, :4])
    assert ds.classes == [] and ds.targets.tolist() == [-1, -1]
    first = ds[0]
    assert torch.is_tensor(first) and first.shape == (1, 4, 4) and first.dtype == torch.uint8
    assert ds[1].shape == (1, 4, 4)
    assert read_image(tmp_path / "a.png").shape == (3, 6, 5)
    expected = np.asarray(Image.open(tmp_path / "a.png").convert("L"))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", "L")[0].numpy(), expected)


def test_missing_pillow_is_a_clear_error(tmp_path, monkeypatch):
    Image.fromarray(rgb(2)).save(tmp_path / "x.png")
    ds = ImageFolder(tmp_path)  # listing files needs no decoder
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now fails
    with pytest.raises(ImportError, match="pip install pillow"):
        ds[0]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .png"):
        ImageFolder(tmp_path)
    (tmp_path / "cls").mkdir()
    Image.fromarray(rgb(0)).save(tmp_path / "cls" / "a.png")
    Image.fromarray(rgb(0)).save(tmp_path / "top.png")
    with pytest.raises(ValueError, match="mixes"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        ImageFolder(tmp_path / "cls", mode="CMYK")
    with pytest.raises(TypeError, match="transform"):
        ImageFolder(tmp_path / "cls", transform=3)
    with pytest.raises(TypeError, match="root"):
        ImageFolder(5)
    (tmp_path / "cls" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode"):
        ImageFolder(tmp_path / "cls")[1]
    assert image_folder.IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg")
