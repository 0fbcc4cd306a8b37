"""PML's zero loss without a positive or a negative (SupConLoss, PNPLoss): both are found in
one host read (each read is a device synchronisation on CUDA)."""

import pytest
import torch

from metricssl.losses import PNPLoss, SupConLoss
from tests.host_reads import count_host_reads
from tests.parity import random_embeddings


@pytest.mark.parametrize("loss_class", [SupConLoss, PNPLoss])
def test_the_zero_loss_check_reads_the_device_once(loss_class, monkeypatch):
    x, labels = random_embeddings(16, 8, torch.float32, seed=0), torch.arange(16) % 4
    with count_host_reads(monkeypatch) as reads:
        loss = loss_class()(x, labels)
    assert reads["__bool__"] == 1, reads
    assert loss > 0
