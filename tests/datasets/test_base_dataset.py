"""What every dataset shares: PML's items, lengths and errors from a prepared root, and the
download protocol (checksums, corrupt archives, all-or-nothing extraction, no re-download)."""

import ast
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import pytorch_metric_learning.datasets as pml_datasets

import metricssl.datasets as ours
from metricssl.datasets import CUB, BaseDataset, Cars196
from metricssl.datasets.base_dataset import STAGING
from tests.datasets.layouts import (
    SPECS,
    corrupt,
    evil_tar,
    http_server,
    relative,
    serve,
    tree,
    zip_of,
)

NAMES = sorted(SPECS)
SPLITS = ("train", "test", "train+test")
PML_ROOT = Path(pml_datasets.__file__).parent


def _prepared(name, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return root, SPECS[name][0](root)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", NAMES)
def test_same_samples_labels_and_items_as_pml(tmp_path, name, split):
    root, expected = _prepared(name, tmp_path)
    mine = getattr(ours, name)(root=str(root), split=split)
    theirs = getattr(pml_datasets, name)(root=str(root), split=split)
    assert mine.paths == theirs.paths and mine.labels == theirs.labels
    assert list(zip(relative(mine.paths, root), mine.labels)) == expected[split]
    assert len(mine) == len(theirs) == len(expected[split]) > 0
    for i in range(len(mine)):
        (image, label), (pml_image, pml_label) = mine[i], theirs[i]
        assert type(label) is int and label == pml_label
        assert image.mode == pml_image.mode and image.size == pml_image.size
        np.testing.assert_array_equal(np.asarray(image), np.asarray(pml_image))
    assert mine[-1][1] == theirs[-1][1]  # negative indices, as with PML's lists


def test_transforms_are_applied_to_the_pil_image_and_the_label(tmp_path):
    root, _ = _prepared("CUB", tmp_path)
    ds = CUB(root, split="test", transform=lambda im: im.size, target_transform=lambda y: -y)
    plain = CUB(root, split="test")
    assert ds[0] == (plain[0][0].size, -plain[0][1])
    assert ds.transform is not None and ds.split == "test" and ds.root == root  # kept as given


def test_pathlib_root_gives_the_same_paths_as_pml(tmp_path):
    root, _ = _prepared("Cars196", tmp_path)
    assert Cars196(root).paths == pml_datasets.Cars196(root).paths


def test_missing_root_without_download_names_root_and_download(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(ValueError) as ours_err:
        CUB(root)
    with pytest.raises(ValueError):  # PML raises the same type
        pml_datasets.CUB(str(root))
    message = str(ours_err.value)
    assert str(root) in message and "download=True" in message
    assert not root.exists()


@pytest.mark.parametrize("name", NAMES)
def test_root_without_the_metadata_names_the_file(tmp_path, name):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        getattr(ours, name)(root)
    with pytest.raises(FileNotFoundError):  # PML's open() fails the same way
        getattr(pml_datasets, name)(str(root))
    assert str(root) in str(err.value) and "download=True" in str(err.value)


def test_argument_errors(tmp_path):
    root, _ = _prepared("CUB", tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, test, train\\+test"):
        CUB(root, split="val")
    with pytest.raises(ValueError):
        pml_datasets.CUB(str(root), split="val")
    with pytest.raises(TypeError, match="root"):
        CUB(None)
    with pytest.raises(TypeError, match="transform"):
        CUB(root, transform="resize")
    with pytest.raises(TypeError, match="target_transform"):
        CUB(root, target_transform=3)
    with pytest.raises(TypeError, match="download"):
        CUB(root, download="yes")
    assert len(CUB(root, download=np.bool_(False))) == len(CUB(root, download=0)) > 0


def test_bad_split_is_refused_before_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", (tmp_path / "absent.tgz").as_uri())
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="split"):
        CUB(root, split="val", download=True)
    assert not root.exists()


def test_pml_style_subclass_works(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")

    class Mine(BaseDataset):
        def generate_split(self):
            self.paths, self.labels = [str(tmp_path / "a.jpg")] * 3, [0, 1, 2]

        def download_and_remove(self):
            raise AssertionError("root exists and is not empty: no download")

    ds = Mine(tmp_path, split="train", download=True)
    assert len(ds) == 3 and ds.labels == [0, 1, 2]
    with pytest.raises(TypeError):  # abstract, as PML's
        BaseDataset(tmp_path)


def _pml_public_names(module_file: Path) -> set[str]:
    tree_ = ast.parse(module_file.read_text())
    names = set()
    for node in tree_.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, ast.Assign):
                    names.update(f"{node.name}.{t.id}" for t in item.targets if hasattr(t, "id"))
                elif isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    names.add(f"{node.name}.{item.name}")
    return names


@pytest.mark.parametrize(
    "module", ["base_dataset", "cub", "cars196", "inaturalist2018", "sop", "__init__"]
)
def test_every_pml_name_and_url_exists_at_the_same_path(module):
    import importlib

    path = "metricssl.datasets" + ("" if module == "__init__" else f".{module}")
    mine = importlib.import_module(path)
    theirs = importlib.import_module(path.replace("metricssl", "pytorch_metric_learning"))
    for name in sorted(_pml_public_names(PML_ROOT / f"{module}.py")):
        cls_name, _, attr = name.partition(".")
        assert hasattr(getattr(mine, cls_name), attr or "__init__"), name
        if attr.isupper():  # the download URLs are PML's
            assert getattr(getattr(mine, cls_name), attr) == getattr(
                getattr(theirs, cls_name), attr
            )
    for name in getattr(pml_datasets, "__all__", dir(pml_datasets)):
        if not name.startswith("_") and isinstance(getattr(pml_datasets, name), type):
            assert hasattr(ours, name), name


# ---- downloads -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_download_into_a_missing_root_matches_the_prepared_layout(tmp_path, monkeypatch, name):
    cls = getattr(ours, name)
    archives, expected = serve(name, cls, tmp_path, monkeypatch)
    root = tmp_path / "deep" / "root"
    ds = cls(root, split="train+test", download=True)
    assert list(zip(relative(ds.paths, root), ds.labels)) == expected["train+test"]
    assert tree(root) == tree(tmp_path / "source")  # nothing more, nothing less
    assert all(a.exists() for a in archives)  # the served files are untouched
    ds[0]  # images decode


@pytest.mark.parametrize("name", NAMES)
def test_download_over_http_gives_the_same_tree_and_items_as_pml(tmp_path, monkeypatch, name):
    cls, pml_cls = getattr(ours, name), getattr(pml_datasets, name)
    archives, _ = serve(name, cls, tmp_path, monkeypatch)
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()  # an empty root is downloaded into, as a missing one
    with http_server(tmp_path / "server") as base:
        for url_attr, _, filename, _, _ in SPECS[name][1]:
            monkeypatch.setattr(cls, url_attr, f"{base}/{filename}")
            monkeypatch.setattr(pml_cls, url_attr, f"{base}/{filename}")
        a = cls(mine, download=True)
        b = pml_cls(str(theirs), download=True)
    assert tree(mine) == tree(theirs)
    assert relative(a.paths, mine) == relative(b.paths, theirs) and a.labels == b.labels


def test_existing_root_is_not_downloaded_again(tmp_path, monkeypatch):
    root, expected = _prepared("CUB", tmp_path)
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", (tmp_path / "absent.tgz").as_uri())
    before = tree(root)
    ds = CUB(root, split="train", download=True)
    assert list(zip(relative(ds.paths, root), ds.labels)) == expected["train"]
    assert tree(root) == before


def test_corrupt_archive_with_a_checksum_is_refused_and_root_left_empty(tmp_path, monkeypatch):
    archives, expected = serve("CUB", CUB, tmp_path, monkeypatch)
    good = archives[0].read_bytes()
    corrupt(archives[0])
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="checksum"):
        CUB(root, download=True)
    assert os.listdir(root) == []
    archives[0].write_bytes(good)  # the next try downloads again and succeeds
    assert len(CUB(root, download=True)) == len(expected["train+test"])


@pytest.mark.parametrize("name", ["Cars196", "StanfordOnlineProducts"])
def test_corrupt_zip_without_a_published_checksum_is_refused(tmp_path, monkeypatch, name):
    cls = getattr(ours, name)
    assert cls.DOWNLOAD_MD5 is None
    archives, _ = serve(name, cls, tmp_path, monkeypatch)
    corrupt(archives[0])
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="corrupt"):
        cls(root, download=True)
    assert os.listdir(root) == []


def test_partial_multi_archive_download_leaves_root_empty(tmp_path, monkeypatch):
    archives, _ = serve("INaturalist2018", ours.INaturalist2018, tmp_path, monkeypatch)
    corrupt(archives[-1])  # the splits zip, fetched last, after ~everything else extracted
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="corrupt"):
        ours.INaturalist2018(root, download=True)
    assert os.listdir(root) == []


def test_archive_without_the_expected_files_is_refused(tmp_path, monkeypatch):
    archives, _ = serve("Cars196", Cars196, tmp_path, monkeypatch)
    zip_of(tmp_path / "source", archives[0], ["names.csv", "car_data"])  # no annotations
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="anno_train.csv, anno_test.csv"):
        Cars196(root, download=True)
    assert os.listdir(root) == []


def test_tar_member_outside_the_folder_is_refused(tmp_path, monkeypatch):
    archive = evil_tar(tmp_path / "server" / "CUB_200_2011.tgz")
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", archive.as_uri())
    monkeypatch.setattr(
        CUB, "DOWNLOAD_MD5", __import__("hashlib").md5(archive.read_bytes()).hexdigest()
    )
    root = tmp_path / "a" / "root"
    with pytest.raises(ValueError, match="escaped.txt"):
        CUB(root, download=True)
    assert os.listdir(root) == [] and not (tmp_path / "a" / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_tar_link_member_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "server" / "CUB_200_2011.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("CUB_200_2011/images.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", archive.as_uri())
    monkeypatch.setattr(
        CUB, "DOWNLOAD_MD5", __import__("hashlib").md5(archive.read_bytes()).hexdigest()
    )
    with pytest.raises(ValueError, match="only plain files"):
        CUB(tmp_path / "root", download=True)


def test_staging_left_by_an_interrupted_download_is_not_data(tmp_path, monkeypatch):
    serve("CUB", CUB, tmp_path, monkeypatch)
    root = tmp_path / "root"
    (root / STAGING / "extracted").mkdir(parents=True)
    (root / STAGING / "CUB_200_2011.tgz").write_bytes(b"half an archive")
    ds = CUB(root, download=True)
    assert len(ds) > 0 and sorted(os.listdir(root)) == ["CUB_200_2011", "attributes.txt"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_items_hold_no_open_file(tmp_path):
    # PML's items keep each image file open until the image is collected; a DataLoader
    # worker holding many would run out of descriptors.
    root, _ = _prepared("CUB", tmp_path)
    ds = CUB(root)
    before = len(os.listdir("/proc/self/fd"))
    items = [ds[i % len(ds)] for i in range(40)]
    assert len(os.listdir("/proc/self/fd")) - before < 5
    assert all(image.getpixel((0, 0)) is not None for image, _ in items)  # still readable
