"""The layering and hygiene rules of DESIGN.md, checked on the source tree itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("secgan", "sites", "coordinator", "audits")


def _py_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("coordinator", ("sites", "audits", "nibabel", "secgan.data")),
        ("sites", ("coordinator", "audits")),
        ("audits", ("coordinator", "sites")),
    ],
)
def test_dependency_direction(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in _py_files(package):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "layering broken:\n" + "\n".join(offenders)


def test_library_never_imports_role_packages_at_module_level() -> None:
    # secgan/ is the shared library; only the CLI dispatcher names role packages (as strings).
    offenders = []
    for path in _py_files("secgan"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for m in mods:
                if m.split(".")[0] in ("sites", "coordinator", "audits"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {m}")
    assert not offenders, "\n".join(offenders)


PATTERNS = {
    "pickle": re.compile(r"^\s*(import pickle|from pickle|import cPickle|import dill)|recv_pyobj|send_pyobj|allow_pickle\s*=\s*True|weights_only\s*=\s*False", re.M),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "global RNG": re.compile(r"np\.random\.(seed|normal|randn|rand|randint|choice|shuffle|uniform)\(|torch\.manual_seed\(|(?<![\w.])random\.(random|randint|choice|shuffle|seed)\("),
    "assert for validation": re.compile(r"^\s*assert\s", re.M),
    "absolute local path": re.compile(r"['\"]/(work|root|home|farm)/"),
}


@pytest.mark.parametrize("rule", sorted(PATTERNS))
def test_source_hygiene(rule: str) -> None:
    offenders = []
    for package in PACKAGES:
        for path in _py_files(package):
            text = path.read_text()
            lines = text.splitlines()
            for m in PATTERNS[rule].finditer(text):
                line = text[: m.start()].count("\n") + 1
                # A justified exception carries its reason on the line: "# hygiene-ok: <why>".
                if "# hygiene-ok:" in lines[line - 1]:
                    continue
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"{rule}:\n" + "\n".join(offenders)
