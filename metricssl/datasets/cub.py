"""CUB-200-2011 (Wah et al., Caltech-UCSD Birds, 2011): 11,788 images of 200 bird species."""

from __future__ import annotations

import os

from .base_dataset import Archive, BaseDataset, fetch_archives, is_int

# Classes (1-based, as in image_class_labels.txt) of each split: the usual zero-shot
# retrieval protocol, first 100 species for training and the other 100 for testing.
_CLASSES = {"train": range(1, 101), "test": range(101, 201), "train+test": range(1, 201)}


class CUB(BaseDataset):
    """CUB-200-2011 as ``root/CUB_200_2011/`` (``images.txt``, ``image_class_labels.txt``,
    ``images/<species>/<file>.jpg``), the layout of the official archive.

    Splits: ``"train"`` = classes 1-100 (5,864 images), ``"test"`` = classes 101-200
    (5,924), ``"train+test"`` = all 11,788. Samples follow ``images.txt`` order; labels are
    the 1-based class ids. ``download=True`` fetches the archive (about 1.1 GB) from
    CaltechDATA and checks its published MD5. See :class:`BaseDataset` for the arguments.

    Example:
        >>> from metricssl.datasets import CUB
        >>> test = CUB(root="data/cub", split="test", download=True)  # doctest: +SKIP
        >>> len(test)  # doctest: +SKIP
        5924
    """

    DOWNLOAD_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    DOWNLOAD_MD5 = "97eceeb196236b17998738112f37df78"
    FOLDER = "CUB_200_2011"

    def generate_split(self) -> None:
        wanted = set(_CLASSES[self.split])
        labels_file = (self.FOLDER, "image_class_labels.txt")
        images_file = (self.FOLDER, "images.txt")
        self.paths, self.labels = [], []
        # The two files are read side by side, line by line; a pair is kept when its class
        # is in the split and both lines name the same image id.
        pairs = zip(self._metadata_lines(*labels_file), self._metadata_lines(*images_file))
        for (number, label_line), (_, image_line) in pairs:
            fields = label_line.split()
            if len(fields) != 2 or not all(is_int(x) for x in fields):
                raise self._malformed(labels_file, number, label_line, "'<image id> <class id>'")
            image_id, class_id = int(fields[0]), int(fields[1])
            if class_id not in wanted:
                continue
            fields = image_line.split()
            if len(fields) != 2 or not is_int(fields[0]):
                raise self._malformed(images_file, number, image_line, "'<image id> <path>'")
            if int(fields[0]) == image_id:
                self.paths.append(os.path.join(self.root, self.FOLDER, "images", fields[1]))
                self.labels.append(class_id)

    def download_and_remove(self) -> None:
        archive = Archive(self.DOWNLOAD_URL, "CUB_200_2011.tgz", self.DOWNLOAD_MD5, "tar")
        required = [f"{self.FOLDER}/images.txt", f"{self.FOLDER}/image_class_labels.txt"]
        fetch_archives(self.root, [archive], required)
