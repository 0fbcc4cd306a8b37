"""RotNet: learn features by predicting which of four rotations an image was turned by."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import random as rnd
from ..augment.checks import check_size
from ..augment.compose import MultiView
from ..augment.recipes import light_view
from ..core.validation import check_module, check_number
from ..models.heads import ProjectionHead
from .method import Batch, MethodConfig, SSLMethod, param

NUM_ROTATIONS = 4


def _check_square(name: str, height: int, width: int) -> None:
    # A 90-degree turn swaps height and width: a batch of non-square images would come out
    # in two shapes, and the shape alone would give the answer away.
    if height != width:
        raise ValueError(
            f"RotNet needs square images (a 90-degree rotation swaps height and width), got "
            f"{name} with height {height} and width {width}; crop or resize them to a square"
        )


def rotnet_views(
    image_size,
    *,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    flip_p: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **options,
) -> MultiView:
    """RotNet's recipe: one lightly augmented view per image, rotated later in the step.

    A random resized crop of 50-100% of the area (back to ``image_size``), a horizontal flip
    with p = 0.5, then the normalisation; no colour jitter, grayscale or blur by default
    (``options`` may turn them on: they are :func:`~metricssl.augment.augmentation_view`'s
    arguments). The pretext task itself supplies the variety: each view is seen in four
    orientations. A flip keeps an upright image upright, so it never makes a label wrong.
    ``image_size`` must be square.

    Example:
        >>> import torch
        >>> from metricssl.ssl.rotnet import rotnet_views
        >>> views = rotnet_views(28, mean=[0.5], std=[0.3])(
        ...     torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
        >>> len(views), tuple(views[0].shape)
        (1, (4, 1, 28, 28))
    """
    size = check_size("image_size", image_size)
    _check_square("image_size", *size)
    return light_view(size, crop_scale, flip_p, mean, std, **options)


def rotnet_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """RotNet's classifier: a :class:`~metricssl.models.heads.ProjectionHead` from the
    backbone's features to the 4 rotation logits, ``head_num_layers`` deep (1: linear) with
    ``head_hidden_dim`` hidden units.

    An MLP rather than a linear map keeps the last backbone layer from specialising wholly
    in orientation cues, as a projection head does for contrastive methods.
    """
    hidden, layers = hparams["head_hidden_dim"], hparams["head_num_layers"]
    check_number("head_hidden_dim", hidden, low=1, integer=True)
    check_number("head_num_layers", layers, low=1, integer=True)
    return {
        "classification_head": ProjectionHead(
            feature_dim, int(hidden), NUM_ROTATIONS, num_layers=int(layers)
        )
    }


def rotate_batch(
    images: torch.Tensor, all_rotations: bool = True, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated copies of a batch of square images and their labels.

    Label ``k`` means the image was turned by ``k * 90`` degrees counter-clockwise
    (``torch.rot90(x, k, dims=(2, 3))``: the top-left pixel goes to the bottom-left for
    ``k = 1``). With ``all_rotations=True`` the result is the four rotations of the whole
    batch one after the other, ``(4N, C, H, W)`` with labels ``[0]*N + [1]*N + [2]*N +
    [3]*N``; otherwise each image is turned by one rotation drawn uniformly (from
    ``generator``, else torch's default generator of the images' device), ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> rotated, labels = rotate_batch(x)
        >>> labels.tolist(), rotated[1, 0].tolist()
        ([0, 1, 2, 3], [[1.0, 3.0], [0.0, 2.0]])
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    _check_square("images", images.shape[2], images.shape[3])
    n, device = images.shape[0], images.device
    if all_rotations:
        rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)])
        labels = torch.arange(NUM_ROTATIONS, device=device).repeat_interleave(n)
        return rotated, labels
    labels = (rnd.rand(n, device, generator) * NUM_ROTATIONS).long().clamp_(max=NUM_ROTATIONS - 1)
    rotated = images
    for k in range(1, NUM_ROTATIONS):
        chosen = (labels == k).view(n, 1, 1, 1)
        rotated = torch.where(chosen, torch.rot90(images, k, dims=(2, 3)), rotated)
    return rotated, labels


@dataclass(frozen=True)
class RotNetConfig(MethodConfig):
    """RotNet's hyper-parameters: the classifier head and the rotations.

    Example:
        >>> from metricssl.ssl.rotnet import RotNetConfig
        >>> RotNetConfig().all_rotations
        True
    """

    head_hidden_dim: int = param(512, low=1, integer=True)
    head_num_layers: int = param(2, low=1, integer=True)
    all_rotations: bool = param(True)


class RotNet(SSLMethod):
    """RotNet: classify the rotation (0, 90, 180 or 270 degrees) of each image.

    Gidaris, Singh and Komodakis, "Unsupervised Representation Learning by Predicting Image
    Rotations", ICLR 2018. To tell which way up a rotated image is, the network must
    recognise the object in it and where its parts are (the head of an animal is above its
    feet, the sole of a shoe is at the bottom). Each view is rotated by ``torch.rot90``
    (:func:`rotate_batch`; label ``k`` = ``k * 90`` degrees counter-clockwise), the backbone
    and ``classification_head`` map the rotated images to 4 logits, and the loss is the
    cross-entropy against the rotation labels.

    With ``all_rotations=True`` (the default, the paper's choice) every image is shown in all
    four orientations in the same batch (4x the rows); the paper found this better than one
    random rotation per image, because the four copies of an image must be told apart by
    orientation alone. ``all_rotations=False`` draws one rotation per image (from torch's
    default generator of the views' device, which the Trainer checkpoints), at a quarter of
    the cost per image.

    Images must be square: a 90-degree turn swaps height and width, so non-square inputs are
    refused (at construction when ``input_shape`` is given, else at the first step).
    ``embed()`` gives the backbone's features of upright clean images.

    Logged: ``rotation_accuracy``, the share of rotated images whose rotation is predicted.

    Args:
        backbone: images -> features.
        classification_head: features -> 4 rotation logits.
        all_rotations: all four rotations of every image (True), or one random rotation.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.rotnet import RotNet
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = RotNet(backbone, nn.Linear(32, 4))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> sorted(out)
        ['loss', 'rotation_accuracy']
    """

    name = "rotnet"
    num_views = 1
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        classification_head: nn.Module,
        all_rotations: bool = RotNetConfig.all_rotations,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_module("classification_head", classification_head)
        out = getattr(classification_head, "output_dim", None)
        if out is not None and out != NUM_ROTATIONS:
            raise ValueError(
                f"classification_head must give {NUM_ROTATIONS} logits (one per rotation), "
                f"its output_dim is {out}"
            )
        RotNetConfig.check(all_rotations=all_rotations)
        if self.input_shape is not None:
            _check_square("input_shape", self.input_shape[1], self.input_shape[2])
        self.classification_head = classification_head
        self.all_rotations = bool(all_rotations)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        rotated, labels = rotate_batch(batch.views[0], self.all_rotations)
        logits = self.classification_head(self.backbone(rotated))
        if logits.ndim != 2 or logits.shape[1] != NUM_ROTATIONS:
            raise ValueError(
                f"classification_head must give (N, {NUM_ROTATIONS}) logits, got "
                f"{tuple(logits.shape)}"
            )
        # The cross-entropy in float32, also under autocast.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "rotation_accuracy": accuracy}
