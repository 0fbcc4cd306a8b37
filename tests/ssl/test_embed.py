"""embed_dataset: where the features are gathered; embed_to_file: features written to disk
batch by batch (.npy, .safetensors), the same numbers as in memory, with bounded memory."""

import numpy as np
import pytest
import torch

from metricssl.data.digits import load_digits
from metricssl.ssl.datasets import ImageData
from metricssl.ssl.embed import embed_dataset, embed_to_file
from metricssl.ssl.registry import build_method


def test_features_are_gathered_on_the_requested_device():
    images, _ = load_digits("test")
    method = build_method("simclr", images.shape[1:])
    on_cpu = embed_dataset(method, images[:20], batch_size=8)
    assert on_cpu.device.type == "cpu" and on_cpu.dtype == torch.float32
    # None: where they are computed (a GPU's features stay on it for the evaluation).
    assert embed_dataset(method, images[:20], batch_size=8, out_device=None).device.type == "cpu"
    # Any other device receives every batch (the meta device stands in for a second one).
    elsewhere = embed_dataset(method, images[:20], batch_size=8, out_device="meta")
    assert elsewhere.device.type == "meta" and elsewhere.shape == on_cpu.shape


def test_trainer_keeps_evaluation_features_on_its_device(monkeypatch, tmp_path):
    from metricssl.ssl import trainer as trainer_module

    seen = {}

    def spy(method, data, batch_size, device, out_device="cpu"):
        seen["out_device"] = out_device
        return torch.zeros(len(data), 4)

    monkeypatch.setattr(trainer_module, "embed_dataset", spy)
    images, labels = load_digits("test")
    trainer = trainer_module.Trainer(
        method="simclr", dataset=(images[:32], labels[:32]), epochs=1, batch_size=16, out=tmp_path
    )
    trainer._features(trainer.train_data)
    assert seen["out_device"] is None


@pytest.fixture(scope="module")
def digits_method():
    images, labels = load_digits("test")
    torch.manual_seed(0)
    return build_method("simclr", images.shape[1:]), images[:50], labels[:50]


def test_npy_file_holds_the_in_memory_features(digits_method, tmp_path):
    method, images, _ = digits_method
    out = embed_to_file(method, images, tmp_path / "sub" / "e.npy", batch_size=16)
    assert (out.rows, out.dim, out.labels) == (50, 128, False)
    on_disk = np.load(out.path, mmap_mode="r")
    assert on_disk.dtype == np.float32 and on_disk.shape == (50, 128)
    expected = embed_dataset(method, images, batch_size=16).numpy()
    np.testing.assert_array_equal(on_disk, expected)
    assert [p.name for p in out.path.parent.iterdir()] == ["e.npy"]  # no temporary left


def test_safetensors_file_holds_features_and_labels(digits_method, tmp_path):
    from safetensors.numpy import load_file

    method, images, labels = digits_method
    out = embed_to_file(method, ImageData(images, labels), tmp_path / "e.safetensors", 16)
    assert (out.rows, out.dim, out.labels) == (50, 128, True)
    tensors = load_file(out.path)
    np.testing.assert_array_equal(tensors["embeddings"], embed_dataset(method, images).numpy())
    np.testing.assert_array_equal(tensors["labels"], labels.numpy())
    unlabelled = embed_to_file(method, images, tmp_path / "u.safetensors", 16)
    assert sorted(load_file(unlabelled.path)) == ["embeddings"] and not unlabelled.labels


def test_features_are_written_batch_by_batch(digits_method, tmp_path, monkeypatch):
    # Memory is bounded: each batch is written before the next is computed, and nothing
    # gathers all the features.
    from metricssl.ssl import embed as embed_module

    method, images, _ = digits_method
    written = []

    class Recorder:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            written.append(len(data))
            return self.f.write(data)

        def seek(self, *args):
            return self.f.seek(*args)

    real_atomic_write = embed_module.atomic_write

    def recording_atomic_write(path):
        import contextlib

        @contextlib.contextmanager
        def opened():
            with real_atomic_write(path) as f:
                yield Recorder(f)

        return opened()

    monkeypatch.setattr(embed_module, "atomic_write", recording_atomic_write)
    monkeypatch.setattr(torch, "cat", None)  # any gathering of all features would fail
    embed_to_file(method, images, tmp_path / "e.npy", batch_size=10)
    header = embed_module._NPY_HEADER_BYTES
    assert written == [header] + [10 * 128 * 4] * 5 + [header]


def test_an_empty_set_is_refused_and_leaves_no_file(digits_method, tmp_path):
    method, images, _ = digits_method
    with pytest.raises(ValueError, match="empty"):
        embed_to_file(method, images[:0], tmp_path / "e.npy")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "path, error, match",
    [
        ("e.csv", ValueError, "must end in .npy or .safetensors"),
        (".", ValueError, "is a folder"),
        (3, TypeError, "path must be a str or os.PathLike"),
    ],
)
def test_bad_paths_are_refused(digits_method, tmp_path, path, error, match):
    method, images, _ = digits_method
    target = tmp_path / path if isinstance(path, str) else path
    if path == ".":
        target = tmp_path / "dir.npy"
        target.mkdir()
    with pytest.raises(error, match=match):
        embed_to_file(method, images, target)


def test_a_failed_embedding_leaves_no_file(digits_method, tmp_path):
    method, images, _ = digits_method
    with pytest.raises(TypeError, match="method must be an SSLMethod"):
        embed_to_file(object(), images, tmp_path / "e.npy")
    with pytest.raises(ValueError, match="images have shape"):
        embed_to_file(method, images[:, :, :4], tmp_path / "e.npy")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
def test_a_gpu_method_writes_the_same_features(digits_method, tmp_path):
    method, images, _ = digits_method
    expected = embed_dataset(method, images, batch_size=16)
    method.cuda()  # features computed on the GPU, copied to the host batch by batch
    try:
        out = embed_to_file(method, images, tmp_path / "e.npy", batch_size=16)
    finally:
        method.cpu()
    np.testing.assert_allclose(np.load(out.path), expected.numpy(), atol=1e-4, rtol=1e-4)
