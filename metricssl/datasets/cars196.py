"""Cars196 (Krause et al., Stanford Cars, 2013): 16,185 images of 196 car models."""

from __future__ import annotations

import os

from .base_dataset import Archive, BaseDataset, fetch_archives, is_int

# Classes (1-based, as in the annotation files) of each split: the usual zero-shot
# retrieval protocol, first 98 models for training and the other 98 for testing.
_CLASSES = {"train": range(1, 99), "test": range(99, 197), "train+test": range(1, 197)}


class Cars196(BaseDataset):
    """Cars196 in the layout of Kaggle's "stanford-car-dataset-by-classes-folder":
    ``root/names.csv`` (one model name a line), ``root/anno_train.csv`` and
    ``root/anno_test.csv`` (``<file>,x1,y1,x2,y2,<class>`` lines) and
    ``root/car_data/car_data/{train,test}/<model name, "/" as "-">/<file>``.

    Splits: ``"train"`` = classes 1-98 (8,054 images), ``"test"`` = classes 99-196 (8,131),
    ``"train+test"`` = all 16,185; Stanford's own train/test halves are both used, samples
    of ``anno_train.csv`` first. Labels are the 1-based class ids. ``download=True``
    fetches the zip from Kaggle (the link PML uses); Kaggle publishes no checksum, so the
    zip's own CRCs and the three CSV files it must hold are checked. See
    :class:`BaseDataset` for the arguments.

    Example:
        >>> from metricssl.datasets import Cars196
        >>> train = Cars196(root="data/cars196", split="train")  # doctest: +SKIP
    """

    DOWNLOAD_URL = "https://www.kaggle.com/api/v1/datasets/download/jutrera/stanford-car-dataset-by-classes-folder"
    DOWNLOAD_MD5 = None

    def generate_split(self) -> None:
        wanted = set(_CLASSES[self.split])
        # Line i names class i + 1; blank lines keep their place, as in PML.
        names = [line.strip() for _, line in self._metadata_lines("names.csv")]
        self.paths, self.labels = [], []
        for half in ("train", "test"):
            annotations = f"anno_{half}.csv"
            for number, line in self._metadata_lines(annotations):
                fields = line.split(",")
                label = fields[-1]
                if len(fields) < 2 or not is_int(label) or not 1 <= int(label) <= len(names):
                    raise self._malformed(
                        [annotations],
                        number,
                        line,
                        f"'<file>,...,<class>' with a class in 1..{len(names)} (names.csv)",
                    )
                label = int(label)
                if label in wanted:
                    folder = names[label - 1].replace("/", "-")
                    self.paths.append(
                        os.path.join(self.root, "car_data", "car_data", half, folder, fields[0])
                    )
                    self.labels.append(label)

    def download_and_remove(self) -> None:
        archive = Archive(
            self.DOWNLOAD_URL,
            "stanford-car-dataset-by-classes-folder.zip",
            self.DOWNLOAD_MD5,
            "zip",
        )
        fetch_archives(self.root, [archive], ["names.csv", "anno_train.csv", "anno_test.csv"])
