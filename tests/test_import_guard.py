"""The pure core never imports ``ray``: only ``costsched/ray_layer`` may."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "costsched"
RAY_LAYER = PACKAGE / "ray_layer"


def ray_imports(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: statement`` for every import of ``ray`` in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                             "__import__")):
            names = [node.args[0].value]
        if any(name == "ray" or name.startswith("ray.") for name in names):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    ("source", "is_ray"),
    [
        ("import ray", True),
        ("import ray.train as rt", True),
        ("import numpy, ray", True),
        ("from ray import train", True),
        ("from ray.train.torch import TorchTrainer", True),
        ("def f():\n    if True:\n        import ray\n", True),
        ("class C:\n    def m(self):\n        from ray import tune\n", True),
        ("import importlib\nimportlib.import_module('ray.data')", True),
        ("import rayon", False),
        ("from costsched.ray_layer import trainer", False),
        ("from . import ray_layer", False),
        ("text = 'import ray'", False),
    ],
)
def test_the_detector_finds_ray_imports_and_nothing_else(source, is_ray):
    assert bool(ray_imports(source)) is is_ray


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_pure_module_imports_ray():
    pure = [p for p in python_files(PACKAGE) if RAY_LAYER not in p.parents]
    assert len(pure) > 20, "the walk found suspiciously few modules"
    offenders = [hit for path in pure
                 for hit in ray_imports(path.read_text(), str(path.relative_to(REPO)))]
    assert not offenders, "pure modules import ray:\n" + "\n".join(offenders)


def test_the_ray_layer_does_import_ray():
    hits = [hit for path in python_files(RAY_LAYER)
            for hit in ray_imports(path.read_text(), str(path.relative_to(REPO)))]
    assert len({h.split(":")[0] for h in hits}) >= 2, hits


def pure_module_names(path: Path = PACKAGE, prefix: str = "costsched.") -> list[str]:
    """Every module under costsched/ except the ray layer, found without importing any."""
    names = []
    for info in pkgutil.iter_modules([str(path)], prefix):
        if info.name == "costsched.ray_layer":
            continue
        names.append(info.name)
        if info.ispkg:
            names += pure_module_names(path / info.name.rsplit(".", 1)[1], info.name + ".")
    return names


IMPORT_ALL = """
import importlib, sys, traceback
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        print(f"cannot import {name}:\\n{traceback.format_exc()}")
        sys.exit(3)
    loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
    if loaded:
        print(f"importing {name} loaded {loaded[:5]}")
        sys.exit(4)
print("ok", len(sys.argv) - 1)
"""


def test_importing_every_pure_module_leaves_ray_unloaded():
    names = pure_module_names()
    assert {"costsched.config.job", "costsched.cost.ledger", "costsched.training.loop",
            "costsched.cli.main", "costsched.cli.train"} <= set(names)
    assert not any(n.startswith("costsched.ray_layer") for n in names)
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, *names], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"ok {len(names)}"
