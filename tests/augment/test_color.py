import colorsys

import pytest
import torch

from metricssl.augment import base
from metricssl.augment import random as rnd
from metricssl.augment.color import (
    ColorJitter,
    RandomGrayscale,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    rgb_to_grayscale,
    shift_hue,
)
from tests.augment.op_count import CountOps


def colorsys_hue(images, shift):
    """Pixel by pixel with the standard library's HSV conversion."""
    out = torch.empty_like(images)
    for n in range(images.shape[0]):
        for i in range(images.shape[2]):
            for j in range(images.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*images[n, :, i, j].tolist())
                rgb = colorsys.hsv_to_rgb((h + float(shift[n])) % 1.0, s, v)
                out[n, :, i, j] = torch.tensor(rgb, dtype=images.dtype)
    return out


# --- grayscale -----------------------------------------------------------------------------


def test_grayscale_equal_channels_luma():
    x = torch.rand(4, 3, 5, 5)
    out = RandomGrayscale(p=1.0)(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[:, 0], luma)


def test_grayscale_one_channel_and_p_zero_unchanged():
    x = torch.rand(4, 1, 5, 5)
    assert torch.equal(RandomGrayscale(p=1.0)(x), x)
    x3 = torch.rand(4, 3, 5, 5)
    assert torch.equal(RandomGrayscale(p=0.0)(x3), x3)


def test_grayscale_per_sample():
    x = torch.rand(1, 3, 4, 4).expand(64, 3, 4, 4)
    out = RandomGrayscale(p=0.5)(x, torch.Generator().manual_seed(0))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1)
    assert gray.any() and (~gray).any()
    assert torch.equal(out[~gray], x[~gray])


# --- hue ----------------------------------------------------------------------------------


def test_hue_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 4, dtype=torch.float64, generator=g)
    x[0, :, 0, 0] = 0.5  # a gray pixel
    x[1, :, 0, 0] = torch.tensor([0.2, 0.7, 0.7], dtype=torch.float64)  # a max tie
    shift = torch.tensor([0.0, 0.1, -0.1, 0.5, -0.5, 0.37], dtype=torch.float64)
    torch.testing.assert_close(shift_hue(x, shift), colorsys_hue(x, shift))


def test_hue_primaries():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    out = shift_hue(red, torch.tensor([1 / 3, 1 / 6, -1 / 3])).flatten(1)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1, 0], [1, 1, 0], [0, 0, 1]]))


# --- colour jitter --------------------------------------------------------------------------


def test_brightness_factor_on_constant_image():
    x = torch.full((2, 1, 3, 3), 0.4)
    out = ColorJitter(brightness=(1.5, 1.5))(x)
    torch.testing.assert_close(out, torch.full_like(x, 0.6))
    out = ColorJitter(brightness=(3.0, 3.0))(x)
    assert out.eq(1.0).all()  # clamped
    out = ColorJitter(brightness=(0.0, 0.0))(x)
    assert out.eq(0.0).all()


def test_brightness_range_from_number():
    x = torch.full((400, 1, 2, 2), 0.5)
    out = ColorJitter(brightness=0.4)(x, torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
    assert factors.min() < 0.7 and factors.max() > 1.3


def test_contrast_semantics():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2)
    out = ColorJitter(contrast=(0.5, 0.5))(x)
    torch.testing.assert_close(out, 0.5 * x + 0.5 * 0.5)
    c = torch.full((1, 1, 2, 2), 0.3)
    assert torch.equal(adjust_contrast(c, torch.tensor([2.0])), c)  # nothing to stretch


def test_saturation_zero_gives_gray():
    x = torch.rand(3, 3, 4, 4)
    out = ColorJitter(saturation=(0.0, 0.0))(x)
    torch.testing.assert_close(out, rgb_to_grayscale(x).expand_as(x))
    torch.testing.assert_close(adjust_saturation(x, torch.ones(3)), x)


def test_saturation_and_hue_are_noops_on_one_channel():
    x = torch.rand(8, 1, 5, 5)
    assert torch.equal(ColorJitter(saturation=0.9, hue=0.5)(x, torch.Generator().manual_seed(0)), x)


def test_p_zero_identity_p_one_applies():
    x = torch.rand(16, 3, 6, 6)
    assert torch.equal(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.0)(x), x)
    out = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(x, torch.Generator().manual_seed(0))
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 1e-4).all()


def test_order_is_random_per_sample():
    # Brightness x2 then contrast 0 gives the clamped image's mean (0.7); contrast 0 then
    # brightness x2 gives twice the mean (1.0).
    x = torch.tensor([0.2, 0.8]).view(1, 1, 1, 2).expand(64, 1, 1, 2)
    out = ColorJitter(brightness=(2.0, 2.0), contrast=(0.0, 0.0))(
        x, torch.Generator().manual_seed(0)
    )
    first = out[:, 0, 0, 0]
    assert ((first - 0.7).abs() < 1e-6).any() and ((first - 1.0).abs() < 1e-6).any()
    assert (((first - 0.7).abs() < 1e-6) | ((first - 1.0).abs() < 1e-6)).all()
    assert (out[:, 0, 0, 0] == out[:, 0, 0, 1]).all()


def test_jitter_range_shape_dtype_and_input_untouched():
    x = torch.rand(32, 3, 8, 8, dtype=torch.float64)
    before = x.clone()
    out = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float64
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before)


def test_jitter_seeded_reproducibility():
    x = torch.rand(16, 3, 4, 4)
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    a = jitter(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, jitter(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, jitter(x, torch.Generator().manual_seed(1)))


def test_jitter_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="channels"):
        ColorJitter(brightness=0.4)(torch.rand(2, 2, 4, 4))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(brightness=-0.1), "brightness"),
        (dict(contrast=(1.2, 0.8)), "contrast"),
        (dict(saturation=(-0.1, 1.0)), "saturation"),
        (dict(saturation="0.4"), "saturation"),
        (dict(hue=0.6), "hue"),
        (dict(hue=(-0.7, 0.1)), "hue"),
        (dict(hue=(0.2, 0.1)), "hue"),
        (dict(p=1.2), "p"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        ColorJitter(**kwargs)


# --- the batched jitter against a per-image reference -----------------------------------------


def jitter_image_by_image(jitter, images, generator):
    """torchvision's ColorJitter semantics, one image at a time: the same draws as
    ColorJitter.apply (coin, one factor per adjustment, permutations), then each jittered
    image goes through its adjustments in its own order."""
    ops = [(adjust_brightness, jitter.brightness), (adjust_contrast, jitter.contrast)]
    if images.shape[1] == 3:
        ops += [(adjust_saturation, jitter.saturation), (shift_hue, jitter.hue)]
    ops = [(fn, r) for fn, r in ops if r is not None]
    n = images.shape[0]
    on = rnd.coin(n, jitter.p, images.device, generator)
    factors = [
        rnd.uniform(n, lo, hi, images.device, generator).to(images.dtype) for _, (lo, hi) in ops
    ]
    order = rnd.permutations(n, len(ops), images.device, generator)
    out = images.clone()
    for i in range(n):
        if on[i]:
            for j in order[i].tolist():
                out[i : i + 1] = ops[j][0](out[i : i + 1], factors[j][i : i + 1])
    return out


@pytest.fixture(params=["cpu path", "device path"])
def jitter_path(request, monkeypatch):
    """Both ways ColorJitter runs: selecting samples (CPU) and whole-batch passes with
    torch.where (the CUDA path, here run on the CPU)."""
    if request.param == "device path":
        monkeypatch.setattr(base, "_select_samples", lambda images: False)
    return request.param


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "channels, dtype", [(3, torch.float32), (3, torch.float64), (1, torch.float32)]
)
def test_jitter_equals_image_by_image_reference(seed, channels, dtype, jitter_path):
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.rand(24, channels, 5, 7, dtype=dtype, generator=g)
    x[0] = 0.5  # a gray image: hue and saturation leave it alone
    jitter = ColorJitter(0.6, 0.6, 0.6, 0.2, p=0.7)
    out = jitter(x, torch.Generator().manual_seed(seed))
    expected = jitter_image_by_image(jitter, x, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        out, expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12
    )


def test_jitter_partial_ranges_equal_image_by_image_reference(jitter_path):
    x = torch.rand(32, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    for kwargs in (
        dict(contrast=0.5, hue=0.3),
        dict(brightness=0.5),
        dict(saturation=0.7, hue=0.1),
    ):
        jitter = ColorJitter(**kwargs, p=0.9)
        out = jitter(x, torch.Generator().manual_seed(2))
        expected = jitter_image_by_image(jitter, x, torch.Generator().manual_seed(2))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


# Outputs of the stage-by-stage implementation (16 apply_where calls for 4 adjustments) that
# the fused one replaced, for ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8) on float64 images
# torch.rand(6, C, 2, 2, generator=manual_seed(100 + seed)) with generator manual_seed(seed).
FROZEN_JITTER = {
    (3, 0): [
        0.7337721586710149, 0.38030987361709384, 0.5061505613625807, 0.31309036248707817,
        0.6448606486394499, 0.7703436243093376, 0.6268331745791352, 0.4373864619119536,
        0.7837356886828841, 0.6511338701240403, 0.5008096327150515, 0.4669606902566197,
        0.657327156839695, 0.9134527432937776, 0.9692830917239221, 0.37823046786717585,
        0.4987635889658165, 0.32301509134968676, 0.788939003814283, 0.4365173375500268,
        0.3198890790434816, 0.32214996069523716, 0.7063884595590658, 0.48678064354347694,
        0.26044938850375066, 0.5537551012018864, 0.6751236668944796, 0.8858078417874159,
        0.5152614543771907, 0.4308611142524612, 0.4244629936765653, 0.7412158144992034,
        0.4928442613475482, 0.24024261083121867, 0.587741063158521, 0.5110094842270533,
        1.0, 0.8855992934037203, 1.0, 0.8294578619905941,
        0.028503813790094683, 0.516982141578663, 0.11034583724072074, 1.0,
        0.0, 0.5695378143212461, 0.0, 0.3617678856768282,
        0.28566614588282574, 0.5153308674045836, 0.6551931199381044, 0.3416513975698614,
        0.21377665182775857, 0.40729936906170716, 0.5664415855941745, 0.6300552143365729,
        0.6228075843738063, 0.7199279885486529, 0.8061389045512029, 0.08256520450006208,
        0.4996030226980019, 0.0, 0.0, 0.0,
        0.4815567284887044, 0.21251508943082448, 0.6529291352466398, 0.22969024369980895,
        0.9299399783653295, 0.579560749920204, 0.9585911089512731, 1.0,
    ],
    (1, 1): [
        0.5508659144888437, 0.7010765984760489, 0.2677478618493804, 0.22688592054864948,
        0.5507211260894447, 0.9301773948196856, 0.7737646315180758, 0.21784178261315149,
        0.7546874216552497, 1.0, 0.07448985953173477, 0.1853095465895332,
        0.4949771434303283, 0.8587153783324482, 0.3061095602079055, 0.8109494687441491,
        0.12644245959451708, 0.04809633915977478, 1.0, 0.8355378783035693,
        0.5172594396770034, 0.6040222348537501, 0.30240425012848426, 0.3633594929309958,
    ],
}  # fmt: skip


@pytest.mark.parametrize("channels, seed", sorted(FROZEN_JITTER))
def test_jitter_equals_frozen_outputs_of_the_staged_implementation(channels, seed, jitter_path):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(6, channels, 2, 2, dtype=torch.float64, generator=g)
    out = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)(x, torch.Generator().manual_seed(seed))
    expected = torch.tensor(FROZEN_JITTER[channels, seed], dtype=torch.float64).view_as(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)


def test_jitter_op_count_on_the_device_path(monkeypatch):
    """One blend pass per stage for brightness, contrast and saturation together: running
    each adjustment over the whole batch at each stage took 350 ops for the four."""
    monkeypatch.setattr(base, "_select_samples", lambda images: False)
    bound = 290
    x = torch.rand(64, 3, 8, 8)
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    with CountOps() as ops:
        out = jitter(x, torch.Generator().manual_seed(0))
    assert ops.count <= bound
    expected = jitter_image_by_image(jitter, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
