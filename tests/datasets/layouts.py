"""Tiny on-disk copies of the four benchmarks' real layouts, and archives of them.

Each ``make_*`` writes a few small JPEG images (some RGB, one greyscale, as the real sets
have) and the metadata files in the format of the real archive, and returns the expected
``(relative path, label)`` list per split in the order PML reads them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile
from pathlib import Path

from PIL import Image


def write_image(path: Path, seed: int, mode: str = "RGB", size=(6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    value = (seed * 37) % 256
    color = value if mode == "L" else (value, (value * 3) % 256, (value * 7) % 256)
    Image.new(mode, size, color).save(path, format="JPEG")


def make_cub(root: Path) -> dict[str, list[tuple[str, int]]]:
    """CUB_200_2011/{images.txt, image_class_labels.txt, images/...} plus the archive's
    top-level attributes.txt. Classes straddle the 100/101 split and both ends; image 4's
    ids disagree between the two files (PML drops such a pair)."""
    folder = root / "CUB_200_2011"
    rows = [  # (image id in labels file, image id in images file, class)
        (1, 1, 1),
        (2, 2, 100),
        (3, 3, 101),
        (4, 5, 50),  # mismatched ids: dropped
        (5, 5, 200),
        (6, 6, 1),
        (7, 7, 150),
    ]
    images, labels = [], []
    expected = {"train": [], "test": [], "train+test": []}
    for label_id, image_id, cls in rows:
        rel = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{label_id:04d}.jpg"
        write_image(folder / "images" / rel, label_id, "L" if label_id == 6 else "RGB")
        images.append(f"{image_id} {rel}")
        labels.append(f"{label_id} {cls}")
        if label_id == image_id:
            item = (f"CUB_200_2011/images/{rel}", cls)
            expected["train" if cls <= 100 else "test"].append(item)
            expected["train+test"].append(item)
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    return expected


# 196 model names; class 174 has the "/" that the Kaggle folders spell "-".
CAR_NAMES = [f"Make{i} Model {2000 + i % 13}" for i in range(1, 197)]
CAR_NAMES[173] = "Ram C/V Cargo Van Minivan 2012"


def make_cars(root: Path) -> dict[str, list[tuple[str, int]]]:
    """names.csv, anno_{train,test}.csv (``file,x1,y1,x2,y2,class``) and
    car_data/car_data/{train,test}/<name>/<file>, as in Kaggle's zip."""
    halves = {
        "train": [("00001.jpg", 14), ("00002.jpg", 98), ("00003.jpg", 99), ("00004.jpg", 174)],
        "test": [("00001.jpg", 196), ("00002.jpg", 1), ("00003.jpg", 174), ("00004.jpg", 98)],
    }
    (root / "names.csv").write_text("\n".join(CAR_NAMES) + "\n")
    expected = {"train": [], "test": [], "train+test": []}
    seed = 0
    for half, rows in halves.items():
        lines = []
        for file, cls in rows:
            seed += 1
            lines.append(f"{file},{seed},{seed + 1},{seed + 40},{seed + 30},{cls}")
            rel = f"car_data/car_data/{half}/{CAR_NAMES[cls - 1].replace('/', '-')}/{file}"
            write_image(root / rel, seed, "L" if seed == 3 else "RGB")
            expected["train" if cls <= 98 else "test"].append((rel, cls))
            expected["train+test"].append((rel, cls))
        (root / f"anno_{half}.csv").write_text("\n".join(lines) + "\n")
    return expected


def make_sop(root: Path) -> dict[str, list[tuple[str, int]]]:
    """Stanford_Online_Products/Ebay_{train,test}.txt (header, then
    ``image_id class_id super_class_id path``) and <category>_final/<file>.JPG."""
    folder = root / "Stanford_Online_Products"
    splits = {
        "train": [
            (1, 1, 1, "bicycle_final/111085122871_0.JPG"),
            (2, 1, 1, "bicycle_final/111085122871_1.JPG"),
            (3, 7, 2, "cabinet_final/110715681235_0.JPG"),
        ],
        "test": [
            (1, 11319, 3, "chair_final/111182689872_0.JPG"),
            (2, 11320, 12, "toaster_final/111157129195_0.JPG"),
        ],
    }
    expected = {"train": [], "test": [], "train+test": []}
    for split, rows in splits.items():
        lines = ["image_id class_id super_class_id path"]
        for image_id, cls, super_cls, rel in rows:
            lines.append(f"{image_id} {cls} {super_cls} {rel}")
            write_image(folder / rel, image_id + cls, "L" if cls == 7 else "RGB")
            expected[split].append((f"Stanford_Online_Products/{rel}", cls))
        (folder / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    expected["train+test"] = expected["train"] + expected["test"]
    return expected


def make_inat(root: Path) -> dict[str, list[tuple[str, int]]]:
    """train_val2018/<kingdom>/<class>/<file>.jpg, train2018.json and val2018.json (COCO
    style: images with id and file_name, annotations with image_id and category_id) and
    Inat_dataset_splits/Inaturalist_{train,test}_set1.txt. The split files mix images of
    the competition's train and val halves, as Smooth-AP's do."""
    images = {  # file_name: (id, category, in val2018.json)
        "train_val2018/Aves/2761/a1.jpg": (10, 2761, False),
        "train_val2018/Aves/2761/a2.jpg": (11, 2761, True),
        "train_val2018/Plantae/7477/p1.jpg": (12, 7477, False),
        "train_val2018/Fungi/5000/f1.jpg": (13, 5000, True),
        "train_val2018/Fungi/5000/f2.jpg": (14, 5000, False),
    }
    for i, (name, (_, _, _)) in enumerate(images.items()):
        write_image(root / name, i + 1, "L" if i == 2 else "RGB")
    for half, in_val in (("train2018.json", False), ("val2018.json", True)):
        entries = [(n, v) for n, v in images.items() if v[2] == in_val]
        doc = {
            "info": {"year": 2018},
            "images": [
                {"id": i, "file_name": n, "width": 6, "height": 5} for n, (i, _, _) in entries
            ],
            "annotations": [
                {"id": i + 1000, "image_id": i, "category_id": c} for _, (i, c, _) in entries
            ],
            "categories": [
                {"id": c, "name": str(c)} for c in sorted({c for _, (_, c, _) in entries})
            ],
        }
        (root / half).write_text(json.dumps(doc))
    splits = {
        "train": [
            "train_val2018/Plantae/7477/p1.jpg",
            "train_val2018/Aves/2761/a2.jpg",
            "train_val2018/Aves/2761/a1.jpg",
        ],
        "test": ["train_val2018/Fungi/5000/f2.jpg", "train_val2018/Fungi/5000/f1.jpg"],
    }
    folder = root / "Inat_dataset_splits"
    folder.mkdir()
    expected = {}
    for split, names in splits.items():
        (folder / f"Inaturalist_{split}_set1.txt").write_text("\n".join(names) + "\n")
        expected[split] = [(n, images[n][1]) for n in names]
    expected["train+test"] = expected["train"] + expected["test"]
    return expected


def tar_gz(source: Path, archive: Path, names: list[str]) -> Path:
    """A .tar.gz of ``source``'s top-level entries ``names`` (recursively)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            tar.add(source / name, arcname=name)
    return archive


def zip_of(source: Path, archive: Path, names: list[str]) -> Path:
    """A .zip of ``source``'s top-level entries ``names`` (recursively)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            top = source / name
            for path in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
                zf.write(path, path.relative_to(source).as_posix())
    return archive


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def corrupt(path: Path) -> None:
    """Flip bytes in the middle of a file (its length stays the same)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + 64, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under root (folders implied)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def evil_tar(archive: Path) -> Path:
    """A .tar.gz whose member climbs out of the extraction folder."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    payload = b"owned"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return archive


def relative(paths: list[str], root: Path) -> list[str]:
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


# Per dataset: its builder and, per archive, (URL attribute, MD5 attribute, archive file name,
# kind, top-level entries of the layout that the archive holds).
SPECS = {
    "CUB": (
        make_cub,
        [
            (
                "DOWNLOAD_URL",
                "DOWNLOAD_MD5",
                "CUB_200_2011.tgz",
                "tar",
                ["attributes.txt", "CUB_200_2011"],
            )
        ],
    ),
    "Cars196": (
        make_cars,
        [
            (
                "DOWNLOAD_URL",
                "DOWNLOAD_MD5",
                "stanford-car-dataset-by-classes-folder.zip",
                "zip",
                ["names.csv", "anno_train.csv", "anno_test.csv", "car_data"],
            )
        ],
    ),
    "StanfordOnlineProducts": (
        make_sop,
        [
            (
                "DOWNLOAD_URL",
                "DOWNLOAD_MD5",
                "Stanford_Online_Products.zip",
                "zip",
                ["Stanford_Online_Products"],
            )
        ],
    ),
    "INaturalist2018": (
        make_inat,
        [
            ("IMG_DOWNLOAD_URL", "IMG_MD5", "train_val2018.tar.gz", "tar", ["train_val2018"]),
            ("TRAIN_ANN_URL", "TRAIN_ANN_MD5", "train2018.json.tar.gz", "tar", ["train2018.json"]),
            ("VAL_ANN_URL", "VAL_ANN_MD5", "val2018.json.tar.gz", "tar", ["val2018.json"]),
            ("SPLITS_URL", "SPLITS_MD5", "Inat_dataset_splits.zip", "zip", ["Inat_dataset_splits"]),
        ],
    ),
}


def serve(name: str, cls, tmp: Path, monkeypatch) -> tuple[list[Path], dict]:
    """Build dataset ``name``'s layout and archives under ``tmp`` and point ``cls``'s URL
    attributes at them (file:// URLs); MD5 attributes that hold a real checksum are pointed
    at the local archive's, those that are None (no published checksum) stay None.
    Returns the archive paths and the expected items per split."""
    make, archives = SPECS[name]
    source = tmp / "source"
    source.mkdir()
    expected = make(source)
    paths = []
    for url_attr, md5_attr, filename, kind, entries in archives:
        pack = tar_gz if kind == "tar" else zip_of
        archive = pack(source, tmp / "server" / filename, entries)
        monkeypatch.setattr(cls, url_attr, archive.as_uri())
        if getattr(cls, md5_attr) is not None:
            monkeypatch.setattr(cls, md5_attr, md5_of(archive))
        paths.append(archive)
    return paths, expected


@contextlib.contextmanager
def http_server(directory: Path):
    """Serve ``directory`` over HTTP on localhost (PML's downloader reads no file:// URLs);
    yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
