"""The floors of the house (docs/architecture.md): core imports nothing of metricssl, and no
module of the package imports metricssl.utils (PML's import path, which sits on top).

Imports are read with ``ast`` from every module's source, so a module path quoted in a
docstring or a comment does not count, and imports inside functions do.
"""

import ast
from pathlib import Path

import pytest

import metricssl

PACKAGE_ROOT = Path(metricssl.__file__).parent
# PML's import paths: they re-export the layers below and may import each other.
PML_PATHS = ("utils", "testers", "trainers", "datasets")


def imported_modules(path: Path, root: Path = PACKAGE_ROOT) -> set[str]:
    """Absolute names of the modules ``path`` (a file of the package at ``root``) imports;
    ``from . import x`` gives both the package and ``package.x``."""
    package = path.relative_to(root.parent).parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.add(module)
            # ``from pkg import sub`` imports the submodule pkg.sub
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def package_modules():
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_import_reader_sees_relative_absolute_and_nested_imports(tmp_path):
    root = tmp_path / "metricssl"
    module = tmp_path / "metricssl" / "losses" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        '"""from ..utils import common_functions"""\n'
        "from ..core import common as c_f\n"
        "def f():\n"
        "    from ..utils.inference import run_pca\n"
        "    import metricssl.eval.knn\n"
    )
    names = imported_modules(module, root)
    assert "metricssl.utils.inference" in names
    assert "metricssl.core.common" in names
    assert "metricssl.eval.knn" in names
    assert "metricssl.utils.common_functions" not in names
    init = tmp_path / "metricssl" / "losses" / "__init__.py"
    init.write_text("from . import x\nfrom .. import utils\n")
    assert {"metricssl.losses.x", "metricssl.utils"} <= imported_modules(init, root)


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_no_module_of_the_package_imports_pmls_utils_path(path):
    inside = path.relative_to(PACKAGE_ROOT).parts
    if inside[0] in PML_PATHS:
        pytest.skip("a PML import path may import utils")
    offending = sorted(n for n in imported_modules(path) if is_under(n, "metricssl.utils"))
    assert not offending, f"{path} imports {offending}: import from metricssl.core (or the layer)"


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE_ROOT / "core").rglob("*.py")),
    ids=lambda p: p.name,
)
def test_core_imports_nothing_of_metricssl_outside_core(path):
    offending = sorted(
        n
        for n in imported_modules(path)
        if is_under(n, "metricssl") and not is_under(n, "metricssl.core")
    )
    assert not offending, f"{path} imports {offending}: core is the ground floor"


def test_core_imports_only_torch_numpy_and_the_standard_library():
    import sys

    allowed = {"torch", "numpy"} | set(sys.stdlib_module_names)
    for path in sorted((PACKAGE_ROOT / "core").rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top in allowed or top == "metricssl", f"{path} imports {name}"
