"""Cars196: PML's class split (1-98 train, 99-196 test) over both Stanford halves, and the
Kaggle layout (model names with "/" stored as "-")."""

import os

import pytest
import pytorch_metric_learning.datasets as pml_datasets

from metricssl.datasets import Cars196
from tests.datasets.layouts import CAR_NAMES, make_cars, relative


def _metadata_only(root, train_rows, test_rows, names=CAR_NAMES):
    (root / "names.csv").write_text("\n".join(names) + "\n")
    for half, rows in (("train", train_rows), ("test", test_rows)):
        text = "".join(f"{i:05d}.jpg,1,2,30,40,{c}\n" for i, c in rows)
        (root / f"anno_{half}.csv").write_text(text)


def test_first_98_classes_train_rest_test_train_half_first(tmp_path):
    train_rows = [(i, 1 + i % 196) for i in range(1, 393)]  # every class twice
    test_rows = [(i, 196 - i % 196) for i in range(1, 197)]  # every class once
    _metadata_only(tmp_path, train_rows, test_rows)
    for split in ("train", "test", "train+test"):
        ds = Cars196(tmp_path, split=split)
        theirs = pml_datasets.Cars196(str(tmp_path), split=split)
        assert ds.paths == theirs.paths and ds.labels == theirs.labels
    train, test = Cars196(tmp_path, split="train"), Cars196(tmp_path, split="test")
    assert set(train.labels) == set(range(1, 99)) and set(test.labels) == set(range(99, 197))
    assert (len(train), len(test)) == (98 * 3, 98 * 3)
    both = Cars196(tmp_path, split="train+test")
    halves = [p.split(os.sep)[-3] for p in relative(both.paths, tmp_path)]
    assert halves == ["train"] * 392 + ["test"] * 196


def test_slash_in_a_model_name_is_a_dash_in_its_folder(tmp_path):
    make_cars(tmp_path)
    ds = Cars196(tmp_path, split="test")
    ram = [p for p, y in zip(ds.paths, ds.labels) if y == 174]
    assert len(ram) == 2 and all("Ram C-V Cargo Van Minivan 2012" in p for p in ram)
    assert all(os.path.isfile(p) for p in ram)


def test_blank_line_in_names_keeps_the_numbering_as_pml(tmp_path):
    names = CAR_NAMES[:4] + [""] + CAR_NAMES[4:]
    _metadata_only(tmp_path, [(1, 5), (2, 6)], [], names=names)
    assert Cars196(tmp_path).paths == pml_datasets.Cars196(str(tmp_path)).paths


@pytest.mark.parametrize("label", ["0", "197", "x"])
def test_class_outside_names_csv_is_an_error(tmp_path, label):
    _metadata_only(tmp_path, [(1, 5)], [])
    (tmp_path / "anno_test.csv").write_text(f"00001.jpg,1,2,3,4,{label}\n")
    with pytest.raises(ValueError, match=r"anno_test.csv, line 1"):
        Cars196(tmp_path)
