"""iNaturalist 2018: Smooth-AP's split files, labels from the competition's annotations."""

import json

import pytest

from metricssl.datasets import INaturalist2018
from tests.datasets.layouts import make_inat


def test_labels_come_from_both_annotation_files_in_split_file_order(tmp_path):
    expected = make_inat(tmp_path)
    for split in ("train", "test", "train+test"):
        ds = INaturalist2018(tmp_path, split=split)
        assert [y for _, y in expected[split]] == ds.labels
    assert INaturalist2018(tmp_path, split="train").labels == [7477, 2761, 2761]


def test_image_missing_from_the_annotations_names_file_and_line(tmp_path):
    make_inat(tmp_path)
    split_file = tmp_path / "Inat_dataset_splits" / "Inaturalist_test_set1.txt"
    split_file.write_text(split_file.read_text() + "train_val2018/Aves/1/missing.jpg\n")
    with pytest.raises(ValueError, match=r"Inaturalist_test_set1.txt, line 3"):
        INaturalist2018(tmp_path, split="test")
    assert len(INaturalist2018(tmp_path, split="train")) == 3  # the other split is fine


def test_missing_annotations_name_the_file(tmp_path):
    make_inat(tmp_path)
    (tmp_path / "val2018.json").unlink()
    with pytest.raises(FileNotFoundError, match="val2018.json"):
        INaturalist2018(tmp_path)
    (tmp_path / "val2018.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="Inaturalist_train_set1.txt, line 2"):
        INaturalist2018(tmp_path)  # a2.jpg is annotated only in the real val2018.json
