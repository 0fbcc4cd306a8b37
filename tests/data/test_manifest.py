"""CSV and Parquet manifests: paths, labels, checks at construction."""

import sys

import numpy as np
import pytest
import torch

from metricssl.data.manifest import ManifestDataset

Image = pytest.importorskip("PIL.Image")


def write_png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_csv_with_names_relative_and_absolute_paths(tmp_path):
    write_png(tmp_path / "img" / "a.png", 10)
    write_png(tmp_path / "img" / "b.png", 20)
    elsewhere = tmp_path / "other" / "c.png"
    write_png(elsewhere, 30)
    (tmp_path / "list.csv").write_text(
        f"path,label\nimg/a.png,dog\nimg/b.png,cat\n{elsewhere},dog\n"
    )
    ds = ManifestDataset(tmp_path / "list.csv")
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [1, 0, 1]
    image, label = ds[2]
    assert image.shape == (3, 8, 8) and int(image[0, 0, 0]) == 30 and label.item() == 1
    assert ManifestDataset(tmp_path / "list.csv", mode="L")[0][0].shape == (1, 8, 8)


def test_csv_integer_labels_and_no_labels(tmp_path):
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    (tmp_path / "ints.csv").write_text("label,path\n3,a.png\n0,b.png\n")
    ds = ManifestDataset(str(tmp_path / "ints.csv"))
    assert ds.targets.tolist() == [3, 0] and ds.classes == ["0", "1", "2", "3"]
    (tmp_path / "plain.csv").write_text("path\na.png\nb.png\n")
    plain = ManifestDataset(tmp_path / "plain.csv")
    assert not plain.labelled and plain.targets.tolist() == [-1, -1]
    assert torch.is_tensor(plain[1])


def test_errors_name_the_problem(tmp_path):
    write_png(tmp_path / "a.png", 1)
    with pytest.raises(ValueError, match="no 'path' column"):
        (tmp_path / "nopath.csv").write_text("file,label\na.png,0\n")
        ManifestDataset(tmp_path / "nopath.csv")
    (tmp_path / "missing.csv").write_text("path\na.png\ngone.png\n")
    with pytest.raises(FileNotFoundError, match=r"1 missing file\(s\): .*gone\.png"):
        ManifestDataset(tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ManifestDataset(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match=".csv or .parquet"):
        ManifestDataset(tmp_path / "a.png")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(ValueError, match="lists no images"):
        ManifestDataset(tmp_path / "empty.csv")
    (tmp_path / "holes.csv").write_text("path,label\na.png,\na.png,1\n")
    with pytest.raises(ValueError, match="without a label"):
        ManifestDataset(tmp_path / "holes.csv")
    (tmp_path / "blank.csv").write_text('path\n""\n')
    with pytest.raises(ValueError, match="empty path"):
        ManifestDataset(tmp_path / "blank.csv")
    with pytest.raises(TypeError, match="path must be"):
        ManifestDataset(3)


def test_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    write_png(tmp_path / "a.png", 5)
    write_png(tmp_path / "b.png", 6)
    table = pa.table({"path": ["a.png", "b.png"], "label": [1, 0]})
    pq.write_table(table, tmp_path / "list.parquet")
    ds = ManifestDataset(tmp_path / "list.parquet")
    assert ds.targets.tolist() == [1, 0] and int(ds[1][0][0, 0, 0]) == 6


def test_parquet_without_pyarrow_is_a_clear_import_error(tmp_path, monkeypatch):
    (tmp_path / "list.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"metricssl\[parquet\]"):
        ManifestDataset(tmp_path / "list.parquet")
