"""Training data: names, folders, pairs, Datasets; batches in a given order."""

import math
import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from metricssl.data import image_data
from metricssl.ssl.datasets import DATASETS, load_dataset, resolve_data


def test_named_dataset_and_errors(tmp_path):
    images, labels = load_dataset("digits", "test")
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    assert "fashion-mnist" in DATASETS and "cifar10" in DATASETS
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_data(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError, match="dataset must be"):
        resolve_data(42)
    with pytest.raises(FileNotFoundError):
        resolve_data("mnist", data_dir=tmp_path)  # no IDX files there


def test_pairs_arrays_and_batches():
    images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 1, 2, 2)
    data = resolve_data((images, np.array([0, 1, 0, 1, 1])))
    assert data.input_shape == (1, 2, 2) and data.labels.dtype == torch.int64
    got = list(data.batches(torch.tensor([4, 0, 2]), 2))
    assert [b.shape[0] for b, _ in got] == [2, 1]
    assert torch.equal(got[0][0][0], torch.from_numpy(images[4])) and got[0][1].tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        resolve_data((torch.zeros(3, 4, 4, dtype=torch.uint8), None))
    with pytest.raises(TypeError, match="uint8"):
        resolve_data((torch.zeros(3, 1, 4, 4, dtype=torch.int32), None))


class Pairs(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((1, 3, 3), i, dtype=torch.uint8), i % 2


def test_torch_dataset_goes_through_a_dataloader():
    data = resolve_data(Pairs())
    assert data.labels.tolist() == [0, 1, 0, 1, 0, 1]
    ((images, labels),) = list(data.batches(torch.tensor([5, 1, 2]), 3))
    assert images[:, 0, 0, 0].tolist() == [5, 1, 2] and labels.tolist() == [1, 1, 0]
    sub = data.subset(torch.tensor([3, 4]))
    assert len(sub) == 2 and sub.labels.tolist() == [1, 0]


def test_image_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pil.fromarray(np.full((5, 5, 3), 40 * i, dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    data = resolve_data(str(tmp_path))
    assert len(data) == 6 and data.input_shape == (3, 5, 5)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]


class Noisy(Dataset):
    """Items drawn from all three random generators, and the process that read them."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        noise = torch.randint(0, 256, (1, 2, 2), dtype=torch.uint8)
        extra = int(np.random.randint(0, 100)) + random.randint(0, 100)
        image = noise.clone()
        image[0, 0, 0] = i
        return image, extra + 1000 * (os.getpid() % 1000)


def read_all(data, order, batch_size=4):
    return [images for images, _ in data.batches(order, batch_size)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_random_items_depend_on_the_batch_only(num_workers):
    """Same batches for 0 or 2 workers, for a fresh ImageData (a resumed run) and in a later
    pass; the main process's random generators are left as they were."""
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    reference = read_all(resolve_data(Noisy(), num_workers=0), order)
    data = resolve_data(Noisy(), num_workers=num_workers)
    torch.manual_seed(5)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    first = read_all(data, order)
    second = read_all(data, order.flip(0))
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
    for a, b in zip(first, reference):
        assert torch.equal(a, b)
    assert [b[:, 0, 0, 0].tolist() for b in first] == [c.tolist() for c in order.split(4)]
    # A batch's items differ from another batch's (the seed follows the indices).
    again = read_all(resolve_data(Noisy(), num_workers=0), order.flip(0))
    for a, b in zip(second, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0][:, :, 1], second[0][:, :, 1])


def test_one_loader_and_its_workers_serve_every_pass():
    data = resolve_data(Noisy(), num_workers=2)
    pids = []
    for seed in range(3):
        order = torch.randperm(20, generator=torch.Generator().manual_seed(seed))
        loader_before = data._loader
        assert len(list(data.batches(order, 5))) == 4
        assert data._loader is not None
        if seed:
            assert data._loader is loader_before
        workers = data._loader._iterator._workers
        pids.append(sorted(w.pid for w in workers))
    assert pids[0] == pids[1] == pids[2] and len(pids[0]) == 2


def test_a_pass_inside_a_pass_gets_its_own_loader():
    data = resolve_data(Pairs())
    outer = []
    for images, _ in data.batches(torch.tensor([0, 1, 2, 3, 4, 5]), 2):
        inner = [im[:, 0, 0, 0].tolist() for im, _ in data.batches(torch.tensor([5, 4]), 1)]
        assert inner == [[5], [4]]
        outer.append(images[:, 0, 0, 0].tolist())
    assert outer == [[0, 1], [2, 3], [4, 5]]


def test_batches_on_a_device_and_pinned_towards_cuda(monkeypatch):
    images = torch.arange(6 * 4, dtype=torch.uint8).reshape(6, 1, 2, 2)
    data = resolve_data((images, torch.arange(6) % 2))
    ((got, labels),) = list(data.batches(torch.tensor([3, 1, 0]), 3, device="cpu"))
    assert torch.equal(got, images[[3, 1, 0]]) and labels.tolist() == [1, 1, 0]
    loader_data = resolve_data(Pairs(), num_workers=0)
    assert loader_data._shared_loader(pin=True).pin_memory
    assert not loader_data._shared_loader(pin=False).pin_memory
    # Towards CUDA the in-memory gather writes into pinned memory (recorded here: this
    # machine may have no CUDA to pin with).
    pinned = []
    real_empty = torch.empty

    def empty(*args, pin_memory=False, **kwargs):
        pinned.append(pin_memory)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    moved = []
    monkeypatch.setattr(image_data, "_moved", lambda x, device: moved.append(device) or x)
    ((got, labels),) = list(data.batches(torch.tensor([3, 1, 0]), 3, device="cuda"))
    assert torch.equal(got, images[[3, 1, 0]]) and labels.tolist() == [1, 1, 0]
    assert pinned == [True, True] and [d.type for d in moved] == ["cuda", "cuda"]


# -- the Trainer over the data layer ---------------------------------------------------------

SMALL_SIMCLR = dict(
    backbone_kwargs={"embedding_dim": 16, "width": 4},
    hparams={"proj_hidden_dim": 32, "proj_output_dim": 16},
    epochs=1,
    batch_size=8,
    progress=False,
    knn_k=5,
    optimizer="sgd",
    lr=0.05,
)


def png_folder(root, n_per_class=12, size=(10, 8)):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            pil.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


@pytest.mark.filterwarnings("ignore::metricssl.ssl.monitor.CollapseWarning")
def test_trainer_trains_one_epoch_from_a_folder(tmp_path):
    from metricssl.ssl.trainer import Trainer

    root = png_folder(tmp_path / "photos")
    data = resolve_data(root, image_size=8, num_workers=2)
    trainer = Trainer(
        "simclr", dataset=data, out=tmp_path / "run", steps_per_epoch=2, **SMALL_SIMCLR
    )
    assert trainer.input_shape == (3, 8, 8) and trainer.num_classes == 2
    row = trainer.fit()
    assert trainer.step == 2 and math.isfinite(row["loss"]) and "knn_accuracy" in row
    # The folder's path works as the dataset too (its own size, 10 x 8).
    direct = Trainer(
        "simclr", dataset=str(root), out=tmp_path / "run2", steps_per_epoch=1, **SMALL_SIMCLR
    )
    assert direct.input_shape == (3, 10, 8)


class CountingPairs(Dataset):
    """Labelled items with no targets attribute; counts the items read in this process."""

    def __init__(self, n=48):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return np.full((8, 8, 1), i, dtype=np.uint8), i % 2


def test_trainer_does_not_read_every_item_for_labels_only_the_items_know(tmp_path):
    from metricssl.ssl.trainer import Trainer

    ds = CountingPairs()
    trainer = Trainer("simclr", dataset=ds, out=tmp_path / "a", steps_per_epoch=1, **SMALL_SIMCLR)
    # The labels were never read (the channel statistics read images, not labels).
    assert not trainer.train_data.labels_known
    assert trainer.val_data is None and trainer.num_classes is None
    # A method that needs labels reads them (once) and gets a held-out split.
    supervised = Trainer(
        "supervised",
        dataset=CountingPairs(),
        out=tmp_path / "b",
        steps_per_epoch=1,
        **{**SMALL_SIMCLR, "hparams": {"samples_per_class": 4}},
    )
    assert supervised.num_classes == 2 and supervised.val_data is not None


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            yield torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8, generator=g)


def test_trainer_from_an_iterable_dataset_and_a_dataloader(tmp_path):
    from metricssl.ssl.trainer import Trainer

    trainer = Trainer(
        "simclr", dataset=Endless(), out=tmp_path / "a", steps_per_epoch=3, **SMALL_SIMCLR
    )
    assert trainer.steps_per_epoch == 3 and trainer.batch_size == 8
    row = trainer.fit()
    assert trainer.step == 3 and math.isfinite(row["loss"])
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    loader = DataLoader(torch.utils.data.TensorDataset(images), batch_size=10, shuffle=True)
    args = {k: v for k, v in SMALL_SIMCLR.items() if k != "batch_size"}
    from_loader = Trainer("simclr", dataset=loader, out=tmp_path / "b", **args)
    assert from_loader.batch_size == 10 and from_loader.steps_per_epoch == 4
    from_loader.fit()
    assert from_loader.step == 4
    with pytest.raises(ValueError, match="batch_size"):
        Trainer("simclr", dataset=Endless(), out=tmp_path / "c", steps_per_epoch=1, **args)
    with pytest.raises(ValueError, match="reads the training images by position"):
        Trainer(
            "npid",
            dataset=loader,
            out=tmp_path / "d",
            **{**args, "hparams": {"embedding_dim": 16, "num_negatives": 16}},
        )
