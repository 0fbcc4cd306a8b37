"""One item of any dataset -> ``(uint8 or float (C, H, W) tensor, label or None)``.

Datasets hand out images in the forms users have: PIL images, HWC numpy arrays (as PIL and
OpenCV give them), CHW tensors (as torchvision's ``ToTensor``/``PILToTensor`` give them), alone
or with a label in a tuple, list or dict. :class:`PrepareItem` turns each into one CHW tensor of
the requested channels and size; it runs in the DataLoader's workers (inside the collate
function), so decoding and resizing never hold up the training process.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..core.validation import check_choice

MODES = ("RGB", "L")
# Keys under which dict items (Hugging Face datasets, webdataset samples) hold image and label.
IMAGE_KEYS = ("image", "img", "pixel_values", "jpg", "png")
LABEL_KEYS = ("label", "labels", "target", "targets", "cls")


def split_item(item) -> tuple[object, object]:
    """``(image, label or None)`` of a dataset item: ``image``, ``(image, label, ...)`` or a
    dict with one of :data:`IMAGE_KEYS` and optionally one of :data:`LABEL_KEYS`.

    Example:
        >>> from metricssl.data.items import split_item
        >>> split_item({"image": "pixels", "label": 3}), split_item("pixels")
        (('pixels', 3), ('pixels', None))
    """
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("a dataset item is an empty tuple/list; expected (image, label)")
        return item[0], item[1] if len(item) > 1 else None
    if isinstance(item, Mapping):
        image_key = next((k for k in IMAGE_KEYS if k in item), None)
        if image_key is None:
            raise ValueError(
                f"a dataset item is a dict with keys {sorted(item)}; the image must be under "
                f"one of {list(IMAGE_KEYS)}"
            )
        label_key = next((k for k in LABEL_KEYS if k in item), None)
        return item[image_key], None if label_key is None else item[label_key]
    return item, None


def label_value(label) -> int:
    """A label as a Python int (an int, a numpy integer, a one-element tensor or array)."""
    if torch.is_tensor(label) or isinstance(label, (np.ndarray, np.generic)):
        if (label.numel() if torch.is_tensor(label) else label.size) != 1:
            raise ValueError(f"a label must be one number, got shape {tuple(label.shape)}")
        label = label.item()
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise TypeError(f"labels must be integers, got {label!r} ({type(label).__name__})")
    return int(label)


def to_chw(image, mode: str | None = None) -> torch.Tensor:
    """A PIL image, an HWC numpy array or a CHW tensor as a (C, H, W) tensor.

    uint8 stays uint8 and float stays float (0..1). ``mode`` ``"RGB"`` gives 3 channels (grey
    is repeated, an alpha channel dropped), ``"L"`` gives 1 grey channel (ITU-R 601-2 luma,
    the same integers as Pillow's ``convert("L")``), None keeps the channels as they are (PIL
    images other than grey or RGB become RGB).

    Example:
        >>> import numpy as np
        >>> from metricssl.data.items import to_chw
        >>> to_chw(np.zeros((4, 5, 3), dtype=np.uint8), mode="L").shape
        torch.Size([1, 4, 5])
    """
    if mode is not None:
        check_choice("mode", mode, MODES)
    if _is_pil(image):
        if image.mode not in ("L", "RGB") or (mode is not None and image.mode != mode):
            image = image.convert(mode or "RGB")
        array = np.array(image)  # a writable copy, safe to share with torch
        image = torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(
                f"a numpy image must be (H, W) or (H, W, C) (as PIL and OpenCV give them), "
                f"got shape {image.shape}"
            )
        array = image[:, :, None] if image.ndim == 2 else image
        image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    elif torch.is_tensor(image):
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(
                f"an image tensor must be (C, H, W) or (H, W), got shape {tuple(image.shape)}"
            )
    else:
        raise TypeError(
            f"cannot read a dataset item of type {type(image).__name__}: items must be PIL "
            f"images, HWC numpy arrays or CHW tensors, alone, in (image, label) or in a dict"
        )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"images must be uint8 (0..255) or floating point, got {image.dtype}")
    if image.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"an image has {image.shape[0]} channels (shape {tuple(image.shape)}); expected 1, "
            f"3 or 4 (numpy images are read as (H, W, C), tensors as (C, H, W))"
        )
    return _channels(image.contiguous(), mode)


def _is_pil(image) -> bool:
    # No import of Pillow unless an item could be one (Pillow is optional).
    return type(image).__module__.startswith("PIL.") and hasattr(image, "convert")


def _channels(image: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Channels (dimension -3) of one image or a batch converted to ``mode``."""
    if image.shape[-3] == 4 and mode is not None:
        image = image[..., :3, :, :]  # alpha dropped, as Pillow's RGBA -> RGB does
    if mode == "RGB" and image.shape[-3] == 1:
        return image.expand(*image.shape[:-3], 3, -1, -1).contiguous()
    if mode == "L" and image.shape[-3] >= 3:
        r, g, b = image[..., 0:1, :, :], image[..., 1:2, :, :], image[..., 2:3, :, :]
        if image.dtype == torch.uint8:
            # Pillow's fixed-point luma (L = R*299/1000 + G*587/1000 + B*114/1000, rounded).
            r, g, b = r.to(torch.int32), g.to(torch.int32), b.to(torch.int32)
            return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)
        return r * 0.299 + g * 0.587 + b * 0.114
    return image


def fit_size(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (C, H, W) image or an (N, C, H, W) batch so it covers ``size`` = (height,
    width), keeping its aspect ratio (bilinear, antialiased), then crop the centre: nothing is
    padded or stretched, the border of the longer side is cut. uint8 stays uint8 (rounded).

    Example:
        >>> import torch
        >>> from metricssl.data.items import fit_size
        >>> fit_size(torch.zeros(3, 30, 40, dtype=torch.uint8), (16, 16)).shape
        torch.Size([3, 16, 16])
    """
    h, w = image.shape[-2:]
    if (h, w) == tuple(size):
        return image
    scale = max(size[0] / h, size[1] / w)
    new_h, new_w = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    x = image.reshape(-1, *image.shape[-3:]).float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size[0]) // 2, (new_w - size[1]) // 2
    x = x[:, :, top : top + size[0], left : left + size[1]]
    x = x.reshape(*image.shape[:-2], *size)
    if image.dtype == torch.uint8:
        return x.round_().clamp_(0, 255).to(torch.uint8).contiguous()
    return x.to(image.dtype).contiguous()


def image_size_pair(image_size) -> tuple[int, int] | None:
    """``image_size`` (None, an int or (height, width)) as None or (height, width)."""
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in image_size)
    ):
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(image_size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


class PrepareItem:
    """Turns a dataset item into ``(image (C, H, W), label or None)``: channels by ``mode``,
    size by ``image_size`` (see :func:`fit_size`). Picklable, so DataLoader workers run it.

    Example:
        >>> import numpy as np
        >>> from metricssl.data.items import PrepareItem
        >>> image, label = PrepareItem(mode="RGB", image_size=4)((np.zeros((8, 6)), 3))
        >>> image.shape, label
        (torch.Size([3, 4, 4]), 3)
    """

    def __init__(self, mode: str | None = None, image_size=None):
        if mode is not None:
            check_choice("mode", mode, MODES)
        self.mode = mode
        self.size = image_size_pair(image_size)

    def __call__(self, item) -> tuple[torch.Tensor, object]:
        image, label = split_item(item)
        image = to_chw(image, self.mode)
        return (image if self.size is None else fit_size(image, self.size)), label

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """One (C, H, W) image or an (N, C, H, W) batch in ``mode`` and ``image_size``."""
        images = _channels(images, self.mode)
        return images if self.size is None else fit_size(images, self.size)

    @property
    def changes_images(self) -> bool:
        return self.mode is not None or self.size is not None
