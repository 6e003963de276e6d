"""Layering: ``octseg.utils`` imports nothing of OCTSeg outside ``octseg.utils``.

Every module under ``src/octseg/utils`` is parsed (not imported), so imports inside functions
and relative imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import octseg.utils

UTILS_DIR = Path(octseg.utils.__file__).resolve().parent

# Modules that still break the rule, each with the reason; an entry is removed when its module
# is fixed (the test below fails for an entry that no longer offends).
ALLOWED_OFFENDERS: set[str] = set()


def _absolute_module(node: ast.ImportFrom, module_name: str) -> str:
    """The absolute module an ``ImportFrom`` node reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module_name.split(".")[:-1]  # a module's own package is level 1
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def outside_imports(source: str, module_name: str) -> list[str]:
    """The modules of OCTSeg outside ``octseg.utils`` that ``source`` imports.

    Args:
        source: Python source code.
        module_name: its dotted name (``octseg.utils.io``), to resolve relative imports.
    """
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_module(node, module_name)
            # `from octseg import models` imports the sub-package `octseg.models`.
            if base == "octseg":
                imported += [f"octseg.{alias.name}" for alias in node.names]
            else:
                imported.append(base)
    # `octseg` itself is utils' parent package, loaded with it anyway.
    return [
        name for name in imported if name.startswith("octseg.") and name.split(".")[1] != "utils"
    ]


def _utils_modules() -> list[Path]:
    return sorted(UTILS_DIR.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(UTILS_DIR).with_suffix("").parts
    return ".".join(("octseg", "utils", *parts))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import octseg.models.unet", ["octseg.models.unet"]),
        ("from octseg.models.base import as_seg_output", ["octseg.models.base"]),
        ("from octseg import metrics, utils", ["octseg.metrics"]),
        ("def f():\n    from octseg.data import base\n", ["octseg.data"]),
        ("from ..models import wrappers", ["octseg.models"]),
        ("from .. import losses", ["octseg.losses"]),
        ("import octseg", []),
        ("import octsegx.models", []),
        ("from octseg.utils.io import atomic_write_text", []),
        ("from . import io\nfrom .resolvers import register_resolvers", []),
        ("import torch\nfrom omegaconf import OmegaConf", []),
    ],
)
def test_the_checker_finds_imports_outside_utils(source: str, expected: list[str]) -> None:
    assert outside_imports(source, "octseg.utils.example") == expected


def test_utils_imports_nothing_of_octseg_outside_utils() -> None:
    modules = _utils_modules()
    assert len(modules) > 3, f"no modules found under {UTILS_DIR}"
    offenders = {}
    for path in modules:
        found = outside_imports(path.read_text(), _module_name(path))
        name = path.relative_to(UTILS_DIR).as_posix()
        if found and name not in ALLOWED_OFFENDERS:
            offenders[name] = found
    assert not offenders, (
        f"octseg.utils must import nothing of OCTSeg outside octseg.utils (a layer imports only "
        f"downward), but {offenders} do; move the code that needs them out of utils."
    )


@pytest.mark.parametrize("name", sorted(ALLOWED_OFFENDERS))
def test_allowed_offenders_still_offend(name: str) -> None:
    path = UTILS_DIR / name
    still = path.is_file() and outside_imports(path.read_text(), _module_name(path))
    assert still, f"{name} no longer imports outside octseg.utils: drop it from ALLOWED_OFFENDERS."
