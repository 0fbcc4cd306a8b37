"""resolve_data: every source users have, labels without decoding, sizes, clear errors."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from metricssl.data import ImageData, resolve_data

Image = pytest.importorskip("PIL.Image")


def write_png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def class_folder(root, sizes=None):
    for c, cls in enumerate(("ant", "bee")):
        for i in range(3):
            size = sizes[(c * 3 + i) % len(sizes)] if sizes else (8, 8)
            write_png(root / cls / f"{i}.png", 40 * c + i, size)
    return root


def read_all(data, batch_size=4):
    return list(data.batches(torch.arange(len(data)), batch_size))


class Counting(Dataset):
    """Items in one form, with a count of the reads."""

    def __init__(self, form, n=6, labelled=True, targets=False):
        self.form, self.n, self.labelled, self.reads = form, n, labelled, 0
        if targets:
            self.targets = [i % 3 for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        hwc = np.full((8, 6, 3), i, dtype=np.uint8)
        image = {
            "pil": lambda: Image.fromarray(hwc),
            "hwc": lambda: hwc,
            "chw": lambda: torch.from_numpy(hwc).permute(2, 0, 1).contiguous(),
        }[self.form]()
        if self.form == "chw" and self.labelled:
            return {"image": image, "label": i % 3}
        return (image, i % 3) if self.labelled else image


def test_class_folder_labels_without_decoding_and_image_size(tmp_path, monkeypatch):
    root = class_folder(tmp_path, sizes=[(8, 8), (12, 6)])
    from metricssl.data import image_files

    decoded = []
    real = image_files.read_image
    monkeypatch.setattr(image_files, "read_image", lambda *a: decoded.append(a) or real(*a))
    data = resolve_data(root, image_size=4, mode="L")
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.labels_known
    assert len(decoded) == 1  # the first image, for the shape; labels came from the folders
    assert data.input_shape == (1, 4, 4)
    (images, labels), (rest, _) = read_all(data, 4)
    assert images.shape == (4, 1, 4, 4) and labels.tolist() == [0, 0, 0, 1]
    assert int(rest[-1].float().mean().round()) == 42


def test_flat_folder_is_unlabelled_and_mixed_sizes_need_image_size(tmp_path):
    write_png(tmp_path / "a.png", 1, (8, 8))
    write_png(tmp_path / "b.png", 2, (9, 8))
    data = resolve_data(tmp_path)
    assert data.labels is None and not data.labelled and data.input_shape == (3, 8, 8)
    with pytest.raises(ValueError, match="image_size"):
        read_all(data, 2)
    with pytest.raises(ValueError, match="image_size"):
        read_all(data, 1)  # one per batch: the second batch differs from the first image
    assert [im.shape for im, _ in read_all(resolve_data(tmp_path, image_size=(6, 5)), 2)] == [
        (2, 3, 6, 5)
    ]


def test_empty_folder_and_unknown_paths(tmp_path):
    with pytest.raises(ValueError, match="root: no .png"):
        resolve_data(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_data(tmp_path / "nowhere.txt")


def test_manifest_source(tmp_path):
    write_png(tmp_path / "x" / "a.png", 3, (10, 10))
    write_png(tmp_path / "x" / "b.png", 4, (10, 10))
    (tmp_path / "m.csv").write_text("path,label\nx/a.png,1\nx/b.png,0\n")
    data = resolve_data(str(tmp_path / "m.csv"), image_size=5)
    assert data.labels.tolist() == [1, 0] and data.input_shape == (3, 5, 5)
    ((images, labels),) = read_all(data)
    assert images.shape == (2, 3, 5, 5) and labels.tolist() == [1, 0]
    (tmp_path / "bad.csv").write_text("file\nx/a.png\n")
    with pytest.raises(ValueError, match="'path' column"):
        resolve_data(tmp_path / "bad.csv")


@pytest.mark.parametrize("form", ["pil", "hwc", "chw"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_any_dataset_item_form(form, num_workers):
    ds = Counting(form)
    data = resolve_data(ds, num_workers=num_workers, image_size=4)
    assert ds.reads <= 2  # one item for labelled-ness, one for the shape: never all
    assert not data.labels_known and data.labelled
    assert data.input_shape == (3, 4, 4)
    batches = read_all(data, 4)
    assert [im.shape[0] for im, _ in batches] == [4, 2]
    assert torch.cat([lab for _, lab in batches]).tolist() == [0, 1, 2, 0, 1, 2]
    assert batches[1][0][1, :, 0, 0].tolist() == [5, 5, 5]  # HWC read as channels last
    # Lazy labels: read on first use, once.
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2] and data.labels_known


def test_targets_attribute_gives_labels_without_reading_items():
    ds = Counting("hwc", targets=True)
    data = resolve_data(ds)
    assert data.labels_known and data.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.reads <= 2
    sub = data.subset(torch.tensor([4, 5]))
    assert sub.labels.tolist() == [1, 2] and ds.reads <= 2
    # A piece of random_split: the parent's labels at its indices.
    piece = resolve_data(torch.utils.data.Subset(ds, [5, 3, 1]))
    assert piece.labels_known and piece.labels.tolist() == [2, 0, 1] and ds.reads <= 4


def test_unlabelled_dataset_and_subset_of_lazy_labels():
    assert resolve_data(Counting("pil", labelled=False)).labels is None
    data = resolve_data(Counting("hwc"))
    sub = data.subset(torch.tensor([5, 1]))
    assert not sub.labels_known and sub.labels.tolist() == [2, 1]


def test_unknown_item_type_is_a_clear_error():
    class Paths(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return "img.png", 0

    with pytest.raises(TypeError, match="cannot read a dataset item of type str"):
        resolve_data(Paths())
    with pytest.raises(TypeError, match="dataset must be"):
        resolve_data(42)


class Stream(IterableDataset):
    def __init__(self, n=10, sized=False):
        self.n, self.sized = n, sized

    def __iter__(self):
        for i in range(self.n):
            yield Image.fromarray(np.full((6, 6), i, dtype=np.uint8)), i % 2

    def __len__(self):
        if not self.sized:
            raise TypeError("no length")
        return self.n


def test_iterable_dataset_in_epochs_of_steps():
    with pytest.raises(ValueError, match="batch_size"):
        resolve_data(Stream())
    with pytest.raises(ValueError, match="steps"):
        resolve_data(Stream(), batch_size=4)
    data = resolve_data(Stream(), batch_size=4, steps=2, mode="RGB", image_size=3)
    assert not data.random_access and len(data) == 8 and data.labelled
    assert data.input_shape == (3, 3, 3)
    first = read_all(data)
    assert [im[:, 0, 0, 0].tolist() for im, _ in first] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert first[0][1].tolist() == [0, 1, 0, 1]
    # The next epoch goes on where the last stopped, and starts the stream again at its end.
    second = read_all(data)
    assert [im[:, 0, 0, 0].tolist() for im, _ in second] == [[8, 9], [0, 1, 2, 3]]
    assert len(resolve_data(Stream(sized=True), batch_size=5)) == 10


def test_dataloader_as_given():
    images = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 1, 2, 2)
    labels = torch.arange(12) % 3
    loader = DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=4)
    data = resolve_data(loader)
    assert data.batch_size == 4 and data.steps == 3 and len(data) == 12
    assert data.input_shape == (1, 2, 2) and data.labels is None and data.labelled
    got = read_all(data, 4)
    assert [lab.tolist() for _, lab in got] == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]]
    # A diagnostic pass over "the first 5 images" of a stream reads its next batches.
    sub = data.subset(torch.arange(5))
    assert len(read_all(sub, 4)) == 2
    with pytest.raises(ValueError, match="differs from the DataLoader's batch_size 4"):
        resolve_data(loader, batch_size=8)
    with pytest.raises(ValueError, match="image_size and mode"):
        resolve_data(loader, image_size=8)
    dicts = DataLoader([{"image": images[i], "label": i} for i in range(4)], batch_size=2)
    assert [lab.tolist() for _, lab in read_all(resolve_data(dicts), 2)] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        resolve_data(DataLoader(torch.zeros(4, 3), batch_size=2))
    with pytest.raises(ValueError, match="yields no batches"):
        resolve_data(DataLoader(Stream(0), batch_size=2), steps=1)


def test_named_dataset_resized_in_memory_and_imagedata_passes_through():
    data = resolve_data("digits", split="test", image_size=16, mode="RGB")
    assert data.input_shape == (3, 16, 16) and len(data) == 359
    ((images, labels),) = list(data.batches(torch.tensor([0, 1]), 2))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    assert resolve_data(data) is data
    with pytest.raises(ValueError, match="already is"):
        resolve_data(data, image_size=8)
    with pytest.raises(TypeError, match="steps"):
        ImageData(None, None, stream=[images], batch_size=2)
    assert isinstance(data, ImageData)
    for bad, match in (({"num_workers": -1}, "num_workers"), ({"steps": 0}, "steps")):
        with pytest.raises(ValueError, match=match):
            resolve_data("digits", **bad)
