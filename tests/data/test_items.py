"""Dataset items in every form -> CHW tensors of the requested channels and size."""

import numpy as np
import pytest
import torch

from metricssl.data.items import (
    PrepareItem,
    fit_size,
    image_size_pair,
    label_value,
    split_item,
    to_chw,
)

Image = pytest.importorskip("PIL.Image")


def rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_split_item_forms():
    image = torch.zeros(1, 2, 2)
    assert split_item(image) == (image, None)
    assert split_item((image, 3))[1] == 3 and split_item([image])[1] is None
    assert split_item((image, 3, "extra"))[1] == 3
    assert split_item({"image": image, "label": 2})[1] == 2
    assert split_item({"img": image})[0] is image
    with pytest.raises(ValueError, match="image must be under"):
        split_item({"pixels": image})
    with pytest.raises(ValueError, match="empty"):
        split_item(())


def test_label_value():
    assert label_value(3) == 3 and label_value(np.int64(4)) == 4
    assert label_value(torch.tensor(5)) == 5 and label_value(torch.tensor([6])) == 6
    with pytest.raises(TypeError, match="integers"):
        label_value(1.5)
    with pytest.raises(TypeError, match="integers"):
        label_value("cat")
    with pytest.raises(ValueError, match="one number"):
        label_value(torch.tensor([1, 2]))


def test_pil_hwc_and_chw_give_the_same_tensor():
    array = rgb()
    expected = torch.from_numpy(array).permute(2, 0, 1)
    for item in (Image.fromarray(array), array, expected.clone()):
        got = to_chw(item)
        assert got.dtype == torch.uint8 and torch.equal(got, expected)
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    assert to_chw(grey).shape == (1, 4, 5) and to_chw(torch.from_numpy(grey)).shape == (1, 4, 5)
    assert to_chw(Image.fromarray(grey)).shape == (1, 4, 5)
    # Float images stay float.
    assert to_chw(torch.rand(3, 4, 4)).dtype == torch.float32


def test_modes_match_pillow():
    array = rgb(7, 9, seed=3)
    pil_grey = np.asarray(Image.fromarray(array).convert("L"))
    for item in (array, torch.from_numpy(array).permute(2, 0, 1), Image.fromarray(array)):
        got = to_chw(item, "L")
        assert got.shape == (1, 7, 9)
        np.testing.assert_array_equal(got[0].numpy(), pil_grey)
    grey = array[:, :, 0]
    assert torch.equal(to_chw(grey, "RGB"), torch.from_numpy(grey)[None].expand(3, -1, -1))
    rgba = np.concatenate([array, np.full((7, 9, 1), 9, np.uint8)], axis=2)
    assert torch.equal(to_chw(rgba, "RGB"), torch.from_numpy(array).permute(2, 0, 1))
    assert to_chw(Image.fromarray(rgba)).shape == (3, 7, 9)  # RGBA PIL -> RGB
    palette = Image.fromarray(array).convert("P")
    assert to_chw(palette).shape == (3, 7, 9)
    float_grey = to_chw(torch.ones(3, 2, 2), "L")
    assert float_grey.shape == (1, 2, 2) and torch.allclose(float_grey, torch.ones(1, 2, 2))


def test_unknown_items_and_shapes_are_clear_errors():
    with pytest.raises(TypeError, match="cannot read a dataset item of type str"):
        to_chw("a.png")
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        to_chw(np.zeros((1, 2, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        to_chw(np.zeros((3, 4, 5), np.uint8))  # numpy is HWC: 5 channels
    with pytest.raises(TypeError, match="uint8"):
        to_chw(torch.zeros(3, 2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="mode"):
        to_chw(rgb(), "CMYK")


def test_fit_size_covers_then_crops_the_centre():
    # Left half 0, right half 200, wider than tall: resizing to 4x4 keeps the middle columns.
    image = torch.zeros(1, 4, 8, dtype=torch.uint8)
    image[:, :, 4:] = 200
    got = fit_size(image, (4, 4))
    assert got.shape == (1, 4, 4) and got.dtype == torch.uint8
    assert torch.equal(got, image[:, :, 2:6])
    big = fit_size(torch.full((3, 10, 20), 7, dtype=torch.uint8), (32, 32))
    assert big.shape == (3, 32, 32) and (big == 7).all()
    batch = fit_size(torch.rand(5, 3, 6, 9), (4, 3))
    assert batch.shape == (5, 3, 4, 3) and batch.dtype == torch.float32
    same = torch.zeros(1, 4, 4)
    assert fit_size(same, (4, 4)) is same


def test_image_size_pair_and_prepare():
    assert image_size_pair(None) is None and image_size_pair(28) == (28, 28)
    assert image_size_pair((32, 64)) == (32, 64)
    for bad in ("32", 2.5, (1, 2, 3), True):
        with pytest.raises(TypeError, match="image_size"):
            image_size_pair(bad)
    with pytest.raises(ValueError, match="image_size"):
        image_size_pair(0)
    image, label = PrepareItem("L", 4)({"image": Image.fromarray(rgb(8, 12)), "label": 1})
    assert image.shape == (1, 4, 4) and label == 1
    assert not PrepareItem().changes_images and PrepareItem(image_size=3).changes_images
