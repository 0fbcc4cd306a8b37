"""Stanford Online Products (Oh Song et al., CVPR 2016): 120,053 eBay product images of
22,634 products."""

from __future__ import annotations

import os

from .base_dataset import Archive, BaseDataset, fetch_archives, is_int


class StanfordOnlineProducts(BaseDataset):
    """Stanford Online Products as ``root/Stanford_Online_Products/`` (``Ebay_train.txt``,
    ``Ebay_test.txt``, ``<category>_final/<file>.JPG``), the layout of the official zip.

    Splits are the published ones: ``"train"`` = ``Ebay_train.txt`` (59,551 images of
    11,318 products), ``"test"`` = ``Ebay_test.txt`` (60,502 images of 11,316 products),
    ``"train+test"`` = both, train first. Labels are the ``class_id`` column (the product).
    ``download=True`` fetches the zip from the authors' Google Drive copy (the link PML
    uses); no checksum is published for that copy, so the zip's own CRCs and the two split
    files it must hold are checked. See :class:`BaseDataset` for the arguments.

    Example:
        >>> from metricssl.datasets import StanfordOnlineProducts
        >>> sop = StanfordOnlineProducts(root="data/sop", split="test")  # doctest: +SKIP
    """

    # The authors' Google Drive copy, linked from
    # https://github.com/rksltnl/Deep-Metric-Learning-CVPR16#stanford-online-products-dataset
    DOWNLOAD_URL = (
        "https://drive.usercontent.google.com/download?id=1TclrpQOF_ullUP99wk_gjGN8pKvtErG8"
        "&export=download&authuser=0&confirm=t"
    )
    DOWNLOAD_MD5 = None
    FOLDER = "Stanford_Online_Products"

    def generate_split(self) -> None:
        splits = ["train", "test"] if self.split == "train+test" else [self.split]
        self.paths, self.labels = [], []
        for split in splits:
            parts = (self.FOLDER, f"Ebay_{split}.txt")
            for number, line in self._metadata_lines(*parts):
                if number == 1:  # the header: image_id class_id super_class_id path
                    continue
                fields = line.split()
                if len(fields) < 4 or not is_int(fields[1]):
                    raise self._malformed(
                        parts, number, line, "'<image_id> <class_id> <super_class_id> <path>'"
                    )
                self.paths.append(os.path.join(self.root, self.FOLDER, fields[3]))
                self.labels.append(int(fields[1]))

    def download_and_remove(self) -> None:
        archive = Archive(
            self.DOWNLOAD_URL, "Stanford_Online_Products.zip", self.DOWNLOAD_MD5, "zip"
        )
        required = [f"{self.FOLDER}/Ebay_train.txt", f"{self.FOLDER}/Ebay_test.txt"]
        fetch_archives(self.root, [archive], required)
