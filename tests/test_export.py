"""export_encoder / load_encoder / `metricssl export`: the encoder alone, out of a checkpoint,
giving the checkpoint's embeddings back (safetensors, TorchScript; ONNX when installed)."""

import copy
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import metricssl
from metricssl import cli
from metricssl.export import EncoderModule, export_encoder, load_encoder
from metricssl.ssl.checkpoint import CheckpointError, load_checkpoint
from metricssl.ssl.embed import embed_dataset
from metricssl.ssl.trainer import Trainer


def images(n=24, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(
        "simclr",
        dataset=(images(64), torch.arange(64) % 4),
        backbone_kwargs={"embedding_dim": 16, "width": 4},
        hparams={"proj_hidden_dim": 32, "proj_output_dim": 16},
        epochs=1,
        batch_size=16,
        steps_per_epoch=2,
        out=out,
        progress=False,
        knn_k=5,
        optimizer="sgd",
        lr=0.05,
    ).fit()
    return out / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def reference(checkpoint):
    """The checkpoint's own embeddings of the test images."""
    method, _ = load_checkpoint(checkpoint)
    return embed_dataset(method, images())


@pytest.mark.parametrize("format, atol", [("safetensors", 0.0), ("torchscript", 1e-5)])
def test_round_trip_gives_the_checkpoints_embeddings(checkpoint, reference, tmp_path, format, atol):
    path = export_encoder(checkpoint, tmp_path / f"encoder.{format}", format)
    encoder = metricssl.load_encoder(path)
    assert isinstance(encoder, torch.nn.Module) and not encoder.training
    with torch.no_grad():
        torch.testing.assert_close(encoder(images()), reference, atol=atol, rtol=0)
    meta = encoder.metadata
    assert meta["method"] == "simclr" and meta["input_shape"] == [3, 16, 16]
    assert meta["feature_dim"] == reference.shape[1] and len(meta["mean"]) == 3


@pytest.mark.parametrize("format", ["safetensors", "torchscript"])
def test_the_encoder_converts_and_resizes_its_input(checkpoint, tmp_path, format):
    encoder = load_encoder(export_encoder(checkpoint, tmp_path / "e", format))
    x = images(4, size=40)
    with torch.no_grad():
        as_uint8 = encoder(x)
        torch.testing.assert_close(encoder(x.float() / 255), as_uint8)
        small = F.interpolate(x.float() / 255, size=[16, 16], mode="bilinear", antialias=True)
        torch.testing.assert_close(encoder(small), as_uint8, atol=1e-5, rtol=0)
        assert encoder(x[0]).shape == (1, as_uint8.shape[1])  # one (C, H, W) image
    with pytest.raises((ValueError, torch.jit.Error), match="channels"):
        encoder(torch.zeros(1, 1, 16, 16))
    with pytest.raises((TypeError, torch.jit.Error), match="uint8 or floating point"):
        encoder(torch.zeros(1, 3, 16, 16, dtype=torch.int32))


@pytest.mark.parametrize("format", ["safetensors", "torchscript"])
def test_flipped_bytes_are_refused(checkpoint, tmp_path, format):
    path = export_encoder(checkpoint, tmp_path / "e", format)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_encoder(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, to make a plain file
def test_files_that_are_not_exports_are_refused(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not a readable TorchScript encoder"):
        load_encoder(checkpoint)  # a training checkpoint is a zip too
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(CheckpointError, match="not a metricssl encoder export"):
        load_encoder(plain)
    embeddings = tmp_path / "embeddings.safetensors"
    save_file(
        {"embeddings": torch.zeros(3, 4)}, str(embeddings), {"format": "metricssl-embeddings"}
    )
    with pytest.raises(CheckpointError, match="not a metricssl encoder export"):
        load_encoder(embeddings)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a metricssl encoder export"):
        load_encoder(junk)
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing.safetensors")


def test_bad_arguments_are_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_encoder(checkpoint, tmp_path / "e", "pickle")
    with pytest.raises(ValueError, match="is a folder"):
        export_encoder(checkpoint, tmp_path, "safetensors")
    with pytest.raises(TypeError, match="out must be a path"):
        export_encoder(checkpoint, 3, "safetensors")
    with pytest.raises(ValueError, match="input_shape must be"):
        EncoderModule(torch.nn.Identity(), (16, 16))
    with pytest.raises(ValueError, match="std must be positive"):
        EncoderModule(torch.nn.Identity(), (1, 4, 4), mean=[0.0], std=[0.0])


def test_onnx_without_its_packages_names_the_extra(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ImportError, match=r"metricssl\[onnx\]"):
        export_encoder(checkpoint, tmp_path / "e.onnx", "onnx")
    assert not (tmp_path / "e.onnx").exists()


def test_onnx_export_gives_the_same_embeddings(checkpoint, reference, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    path = export_encoder(checkpoint, tmp_path / "e.onnx", "onnx")
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["input_shape"] == [3, 16, 16] and props["method"] == "simclr"
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path))
    (features,) = session.run(None, {"images": (images().float() / 255).numpy()})
    torch.testing.assert_close(torch.from_numpy(features), reference, atol=1e-4, rtol=0)


def test_the_export_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "enc.pt"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript"]
    assert cli.main([*argv, "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"output": str(out), "format": "torchscript", "input_shape": [3, 16, 16]}
    assert load_encoder(out).metadata["method"] == "simclr"
    missing = ["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]
    assert cli.main(missing) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_an_embedding_head_is_part_of_the_exported_encoder(tmp_path):
    # Supervised metric learning with embedding_dim embeds through a head after the backbone.
    Trainer(
        "supervised",
        dataset=(images(64), torch.arange(64) % 4),
        backbone_kwargs={"embedding_dim": 16, "width": 4},
        hparams={"samples_per_class": 4, "embedding_dim": 8},
        epochs=1,
        batch_size=16,
        steps_per_epoch=1,
        out=tmp_path / "run",
        progress=False,
        knn_k=5,
    ).fit()
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    method, _ = load_checkpoint(checkpoint)
    expected = embed_dataset(method, images())
    assert expected.shape[1] == 8
    scripted = load_encoder(export_encoder(checkpoint, tmp_path / "e.pt", "torchscript"))
    torch.testing.assert_close(scripted(images()), expected, atol=1e-5, rtol=0)
    path = export_encoder(checkpoint, tmp_path / "e.safetensors")
    with pytest.raises(CheckpointError, match="pass backbone="):
        load_encoder(path)
    network = torch.nn.Sequential(
        copy.deepcopy(method.backbone), copy.deepcopy(method.embedding_head)
    )
    with torch.no_grad():
        for p in network.parameters():
            p.zero_()  # the weights come from the file
        torch.testing.assert_close(load_encoder(path, backbone=network)(images()), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("format", ["safetensors", "torchscript"])
def test_an_encoder_loaded_onto_a_gpu_gives_the_same_embeddings(
    checkpoint, reference, tmp_path, format
):
    encoder = load_encoder(export_encoder(checkpoint, tmp_path / "e", format), device="cuda")
    with torch.no_grad():
        features = encoder(images().cuda())
    assert features.device.type == "cuda"
    torch.testing.assert_close(features.cpu(), reference, atol=1e-4, rtol=1e-4)
