"""Packaging (issue 19): FAISS through exactly one of two extras (faiss-cpu and
faiss-gpu-cu12 both install the `faiss` module), py.typed shipped, safetensors a dependency
of the features that write it, clear errors naming the extra to install."""

import subprocess
import sys
from pathlib import Path

import pytest

import metricssl

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements):
    return {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip() for r in requirements}


def test_faiss_comes_from_one_extra_or_the_other(project):
    extras = project["optional-dependencies"]
    assert not names(project["dependencies"]) & {"faiss-cpu", "faiss-gpu-cu12"}
    assert names(extras["cpu"]) == {"faiss-cpu"}
    assert names(extras["gpu"]) == {"faiss-gpu-cu12"}
    for name, requirements in extras.items():  # no extra brings both (e.g. dev with gpu)
        if name != "cpu":
            assert "faiss-cpu" not in names(requirements), name
    assert "metricssl[cpu," in extras["all"][0]


def test_safetensors_is_a_dependency(project):
    assert "safetensors" in names(project["dependencies"])


def test_py_typed_ships_with_the_package():
    assert (Path(metricssl.__file__).parent / "py.typed").is_file()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["metricssl"]


def test_index_without_faiss_names_the_extras():
    code = "import sys; sys.modules['faiss'] = None; from metricssl.index import EmbeddingIndex"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0
    assert "pip install 'metricssl[cpu]', or 'metricssl[gpu]'" in run.stderr


def test_shard_format_works_without_faiss():
    # The shard format and embed --shards need no FAISS: only building an index does.
    code = (
        "import sys; sys.modules['faiss'] = None; import metricssl.index.shards; "
        "import metricssl.ssl.embed"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def test_backbone_packages_are_extras_outside_all(project):
    # timm and torchvision may replace the torch a user chose: asked for by name only.
    extras = project["optional-dependencies"]
    assert names(extras["timm"]) == {"timm"} and names(extras["torchvision"]) == {"torchvision"}
    everything = names(extras["all"][0].split("[")[1].rstrip("]").split(","))
    assert not everything & {"timm", "torchvision"}
    for name, requirements in extras.items():
        if name not in ("timm", "torchvision"):
            assert not names(requirements) & {"timm", "torchvision"}, name
