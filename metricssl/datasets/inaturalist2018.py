"""iNaturalist 2018 (Van Horn et al., CVPR 2018) with the retrieval splits of Smooth-AP
(Brown et al., ECCV 2020)."""

from __future__ import annotations

import json
import os

from .base_dataset import Archive, BaseDataset, fetch_archives

_SPLITS_FOLDER = "Inat_dataset_splits"


class INaturalist2018(BaseDataset):
    """iNaturalist 2018 for retrieval, in ``root`` as its archives extract:
    ``train_val2018/<kingdom>/<class>/<file>.jpg``, ``train2018.json``, ``val2018.json``
    and Smooth-AP's ``Inat_dataset_splits/Inaturalist_{train,test}_set1.txt`` (one image
    path a line, as the JSON files name it).

    Splits: ``"train"`` (325,846 images) and ``"test"`` (136,093) list the images of
    Smooth-AP's split files in their order; ``"train+test"`` is train then test. Labels are the ``category_id`` of each
    image in the competition's annotations. ``download=True`` fetches the images (about
    120 GB) and both annotation archives from the competition's S3 bucket, checking the
    MD5s published in https://github.com/visipedia/inat_comp/tree/master/2018, and the
    split files from Smooth-AP's Google Drive link (no checksum published: the zip's own
    CRCs and the two split files it must hold are checked). See :class:`BaseDataset` for
    the arguments.

    Example:
        >>> from metricssl.datasets import INaturalist2018
        >>> test = INaturalist2018(root="data/inat2018", split="test")  # doctest: +SKIP
    """

    IMG_DOWNLOAD_URL = (
        "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train_val2018.tar.gz"
    )
    IMG_MD5 = "b1c6952ce38f31868cc50ea72d066cc3"
    TRAIN_ANN_URL = (
        "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train2018.json.tar.gz"
    )
    TRAIN_ANN_MD5 = "bfa29d89d629cbf04d826a720c0a68b0"
    VAL_ANN_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/val2018.json.tar.gz"
    VAL_ANN_MD5 = "f2ed8bfe3e9901cdefceb4e53cd3775d"
    # Linked from https://github.com/Andrew-Brown1/Smooth_AP#data
    SPLITS_URL = "https://drive.google.com/uc?id=1sXfkBTFDrRU3__-NUs1qBP3sf_0uMB98"
    SPLITS_MD5 = None

    def generate_split(self) -> None:
        path_to_id, id_to_label = {}, {}
        # val before train, so that on a (never seen) clash train's entry wins, as in PML.
        for name in ("val2018.json", "train2018.json"):
            with self._open_metadata(name) as f:
                annotations = json.load(f)
            path_to_id.update((x["file_name"], x["id"]) for x in annotations["images"])
            id_to_label.update(
                (x["image_id"], x["category_id"]) for x in annotations["annotations"]
            )
        splits = ["train", "test"] if self.split == "train+test" else [self.split]
        self.paths, self.labels = [], []
        for split in splits:
            parts = (_SPLITS_FOLDER, f"Inaturalist_{split}_set1.txt")
            for number, line in self._metadata_lines(*parts):
                path = line.strip()
                image_id = path_to_id.get(path)
                if image_id is None or image_id not in id_to_label:
                    raise self._malformed(
                        parts, number, line, "an image path annotated in train2018/val2018.json"
                    )
                self.paths.append(os.path.join(self.root, path))
                self.labels.append(id_to_label[image_id])

    def download_and_remove(self) -> None:
        archives = [
            Archive(self.IMG_DOWNLOAD_URL, "train_val2018.tar.gz", self.IMG_MD5, "tar"),
            Archive(self.TRAIN_ANN_URL, "train2018.json.tar.gz", self.TRAIN_ANN_MD5, "tar"),
            Archive(self.VAL_ANN_URL, "val2018.json.tar.gz", self.VAL_ANN_MD5, "tar"),
            Archive(self.SPLITS_URL, "Inat_dataset_splits.zip", self.SPLITS_MD5, "zip"),
        ]
        required = ["train2018.json", "val2018.json"] + [
            f"{_SPLITS_FOLDER}/Inaturalist_{split}_set1.txt" for split in ("train", "test")
        ]
        fetch_archives(self.root, archives, required)
