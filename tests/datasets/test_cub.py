"""CUB-200-2011: PML's class split (1-100 train, 101-200 test) and its metadata rules."""

import pytest
import pytorch_metric_learning.datasets as pml_datasets

from metricssl.datasets import CUB
from tests.datasets.layouts import make_cub


def _metadata_only(root, rows):
    """images.txt / image_class_labels.txt for (image id, class) rows; no image files
    (building the split reads no image)."""
    folder = root / "CUB_200_2011"
    folder.mkdir(parents=True)
    (folder / "images.txt").write_text("".join(f"{i} c{c}/img{i}.jpg\n" for i, c in rows))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in rows))


def test_first_100_classes_train_last_100_test_in_file_order(tmp_path):
    # 200 classes, 3 images each, listed class-interleaved so order is observable
    rows = [(1 + k * 200 + c - 1, c) for k in range(3) for c in range(1, 201)]
    _metadata_only(tmp_path, rows)
    sizes = {}
    for split in ("train", "test", "train+test"):
        ds = CUB(tmp_path, split=split)
        assert ds.paths == pml_datasets.CUB(str(tmp_path), split=split).paths
        sizes[split] = len(ds)
        assert ds.labels == [
            c for _, c in rows if split != "train" or c <= 100 if split != "test" or c > 100
        ]
    assert set(CUB(tmp_path, split="train").labels) == set(range(1, 101))
    assert set(CUB(tmp_path, split="test").labels) == set(range(101, 201))
    assert sizes == {"train": 300, "test": 300, "train+test": 600}


def test_mismatched_ids_are_dropped_and_greyscale_stays_greyscale(tmp_path):
    expected = make_cub(tmp_path)
    ds = CUB(tmp_path)
    assert len(ds) == len(expected["train+test"]) == 6  # 7 rows, one with mismatched ids
    assert sorted({ds[i][0].mode for i in range(len(ds))}) == ["L", "RGB"]


def test_malformed_label_line_names_file_and_line(tmp_path):
    _metadata_only(tmp_path, [(1, 1), (2, 2)])
    labels = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text("1 1\n2 two\n")
    with pytest.raises(ValueError, match=r"image_class_labels.txt, line 2"):
        CUB(tmp_path)
