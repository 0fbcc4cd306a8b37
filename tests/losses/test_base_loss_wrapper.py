"""BaseLossWrapper: the supported-loss check shared by the loss wrappers."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from metricssl.losses.base_loss_wrapper import BaseLossWrapper
from metricssl.losses.ntxent_loss import NTXentLoss


class OnlyNTXent(BaseLossWrapper):
    @staticmethod
    def supported_losses():
        return ["NTXentLoss"]


def test_supported_losses_are_matched_by_class_name():
    assert isinstance(OnlyNTXent(NTXentLoss()), torch.nn.Module)
    OnlyNTXent(pml_losses.NTXentLoss())  # PML's class has the same name


def test_unsupported_loss_raises_a_type_error_naming_both():
    with pytest.raises(TypeError, match=r"OnlyNTXent does not support SupConLoss.*NTXentLoss"):
        OnlyNTXent(pml_losses.SupConLoss())


def test_base_class_needs_a_list():
    with pytest.raises(NotImplementedError):
        BaseLossWrapper(NTXentLoss())
