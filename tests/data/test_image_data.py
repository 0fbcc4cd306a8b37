"""ImageData is freed by reference counting: its DataLoader's workers are told to stop and
exit when it goes, instead of waiting for the cycle collector (which closes the loader's
queues first, so that each worker was waited for 5 s and then killed)."""

import gc
import weakref

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from metricssl.data import resolve_data


class Items(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.full((1, 2, 2), index, dtype=torch.uint8), index % 2


class Stream(IterableDataset):
    def __iter__(self):
        return iter(Items()[i] for i in range(8))


@pytest.mark.parametrize("source", ["dataset", "stream"])
def test_image_data_and_its_views_are_freed_without_the_cycle_collector(source):
    if source == "dataset":
        data = resolve_data(Items(), num_workers=1)
    else:
        data = resolve_data(Stream(), batch_size=4, steps=2)
    view = data.subset(torch.arange(4))
    for images, _ in view.batches(torch.arange(4), 4):
        assert images.shape == (4, 1, 2, 2)
    refs = [weakref.ref(data), weakref.ref(view)]
    gc.disable()
    try:
        del data, view
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
