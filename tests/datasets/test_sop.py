"""Stanford Online Products: the published Ebay_train/Ebay_test split files."""

import pytest
import pytorch_metric_learning.datasets as pml_datasets

from metricssl.datasets import StanfordOnlineProducts
from tests.datasets.layouts import make_sop


def test_split_files_header_skipped_train_then_test(tmp_path):
    expected = make_sop(tmp_path)
    train = StanfordOnlineProducts(tmp_path, split="train")
    test = StanfordOnlineProducts(tmp_path, split="test")
    both = StanfordOnlineProducts(tmp_path)
    assert (len(train), len(test), len(both)) == (3, 2, 5)
    assert both.paths == train.paths + test.paths and both.labels == train.labels + test.labels
    assert train.labels == [y for _, y in expected["train"]] == [1, 1, 7]


def test_extra_columns_are_ignored_as_in_pml(tmp_path):
    make_sop(tmp_path)
    path = tmp_path / "Stanford_Online_Products" / "Ebay_test.txt"
    path.write_text(path.read_text().replace(".JPG\n", ".JPG extra\n"))
    ds = StanfordOnlineProducts(tmp_path, split="test")
    theirs = pml_datasets.StanfordOnlineProducts(str(tmp_path), split="test")
    assert ds.paths == theirs.paths and ds.labels == theirs.labels


def test_malformed_line_names_file_and_line(tmp_path):
    make_sop(tmp_path)
    path = tmp_path / "Stanford_Online_Products" / "Ebay_train.txt"
    path.write_text(path.read_text() + "4 seven 1\n")
    with pytest.raises(ValueError, match=r"Ebay_train.txt, line 5"):
        StanfordOnlineProducts(tmp_path, split="train")
