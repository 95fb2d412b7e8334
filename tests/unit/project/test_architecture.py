"""The layering and hygiene rules of DESIGN.md, checked on the source tree itself."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("secgan", "sites", "coordinator", "audits")


def _py_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


# The layers, lowest first. A module may import its own package and any package of a LOWER layer,
# never a sibling of its own layer nor anything above it; every import counts, those inside
# functions too. Each package below names one layer; a new top-level module or package must be
# given one here (and in the README's "Layout and development").
LAYERS: tuple[tuple[str, ...], ...] = (
    ("secgan", "secgan.core"),  # the package root (its version) and the ground floor
    ("secgan.net", "secgan.keys", "secgan.data"),
    ("secgan.secagg",),  # secure-sum primitives: reads keys, speaks net
    ("secgan.gan",),  # models, steps, conditions (a bank is read with secgan.data), checkpoints
    ("secgan.privacy",),  # DP-SGD and sanitize wrap gan's step functions; secure-sum noise shares
    ("secgan.run", "secgan.settings"),  # a run's config (composes the privacy policy); role configs
    ("sites", "coordinator"),  # the two roles; never each other
    # in-process federations: every role in one process, built from the roles' own parts (the
    # coordinator's generator core, the site's learner), so it sits above them
    ("secgan.simulation",),
    ("secgan.evaluation", "audits"),
    ("secgan.cli",),  # the dispatcher: it names the commands only as strings
    ("secgan.commands",),  # one module per subcommand, the CLI edge where configs are built
)
ROLES = ("sites", "coordinator", "audits")
# Entry points (`python -m ...`) sit above every layer.
ENTRY_POINTS = ("secgan.__main__", "sites.__main__", "coordinator.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` (named ``module``) imports, at any depth of the AST, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = module or _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return names


def _unit(module: str) -> str | None:
    """The layered package ``module`` belongs to (``secgan.gan`` for ``secgan.gan.step``), None for
    a third-party module."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if module in ENTRY_POINTS:
        return module
    return ".".join(parts[:2]) if parts[0] == "secgan" and len(parts) > 1 else parts[0]


def _layer(unit: str) -> int | None:
    if unit in ENTRY_POINTS:
        return len(LAYERS)
    for i, members in enumerate(LAYERS):
        if unit in members:
            return i
    return None


def test_every_package_has_a_layer() -> None:
    missing = sorted({u for p in PACKAGES for f in _py_files(p) if _layer(u := _unit(_module_name(f))) is None})
    assert not missing, "packages with no declared layer (add them to LAYERS and the README): " + ", ".join(missing)


def layering_offences(modules: list[tuple[Path, str]]) -> list[str]:
    """The imports of each (file, module name) that go to the same or a higher layer."""
    offenders = []
    for path, module in modules:
        unit = _unit(module)
        here = _layer(unit)
        for name in sorted(_imports(path, module)):
            target = _unit(name)
            if target is None or target == unit or here is None:
                continue
            there = _layer(target)
            if there is None or there >= here:
                offenders.append(f"{module} ({unit}, layer {here}) imports {name} (layer {there})")
    return offenders


def test_imports_run_downward_only_including_lazy_ones() -> None:
    offenders = layering_offences([(f, _module_name(f)) for p in PACKAGES for f in _py_files(p)])
    assert not offenders, "upward or sideways imports:\n" + "\n".join(offenders)


def test_the_layering_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The check itself: a lazy upward import deep in a method is caught, a relative one resolved.
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\nfrom secgan.core import errors\n\n\nclass A:\n    def f(self):\n        if True:\n"
                     "            from secgan.privacy import policy\n        from ..run import config\n")
    found = layering_offences([(probe, "secgan.gan.probe")])
    assert len(found) == 2 and "secgan.privacy" in found[0] and "secgan.run" in found[1], found


# The shared library: every secgan package below the roles. The packages of secgan above the
# roles (simulation, evaluation, cli, commands) are the application edge that composes them.
ROLE_LAYER = LAYERS.index(("sites", "coordinator"))
LIBRARY = tuple(unit for layer in LAYERS[:ROLE_LAYER] for unit in layer)


def role_imports(modules: list[tuple[Path, str]]) -> list[str]:
    """The imports of a role (coordinator, sites, audits) by each (file, module) of the library."""
    return [f"{module} imports {name}" for path, module in modules if _unit(module) in LIBRARY
            for name in sorted(_imports(path, module)) if name.split(".")[0] in ROLES]


def test_the_library_never_imports_a_role_not_even_lazily(tmp_path: Path) -> None:
    offenders = role_imports([(f, _module_name(f)) for f in _py_files("secgan")])
    assert not offenders, "the library imports a role:\n" + "\n".join(offenders)
    probe = tmp_path / "probe.py"  # the check itself: a role import hidden in a method is seen
    probe.write_text("def f():\n    from sites.learner import SiteLearner\n    import coordinator.core\n")
    assert len(role_imports([(probe, "secgan.gan.probe")])) == 2
    assert role_imports([(probe, "secgan.simulation.probe")]) == []  # above the roles: allowed


# Role logic and the role folder that owns it: defined there, once, and nowhere in secgan/. (The
# site's ``SiteConfig`` is read by two roles, the site and its auditor, so it is library:
# ``secgan.settings``.)
ROLE_LOGIC = {
    "GeneratorCore": "coordinator",
    "build_generator_core": "coordinator",
    "moment_loss": "coordinator",
    "Scheduler": "coordinator",
    "CoordinatorConfig": "coordinator",
    "ServiceConfig": "coordinator",
    "SiteLearner": "sites",
    "NodeConfig": "sites",
    "check_fake_batch": "sites",
}
# names that must not exist anywhere any more (a second learner for one mode)
RETIRED = ("PlainSiteLearner",)


def _top_level_definitions(package: str) -> list[tuple[str, str]]:
    found = []
    for path in _py_files(package):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                found.append((node.name, str(path.relative_to(ROOT))))
    return found


def test_role_logic_lives_in_its_role_folder_once() -> None:
    where: dict[str, list[str]] = {}
    for package in PACKAGES:
        for name, file in _top_level_definitions(package):
            if name in ROLE_LOGIC or name in RETIRED:
                where.setdefault(name, []).append(file)
    problems = [f"{name} is defined in {', '.join(files)}" for name, files in where.items() if name in RETIRED]
    for name, role in ROLE_LOGIC.items():
        files = where.get(name, [])
        if len(files) != 1 or not files[0].startswith(role + "/"):
            problems.append(f"{name} must be defined once, in {role}/, found in: {', '.join(files) or 'nowhere'}")
    assert not problems, "role logic out of place:\n" + "\n".join(problems)


def test_one_config_type_per_role_the_process_configs_copy_no_setting() -> None:
    """What each role's process runs from is its settings plus what the CLI edge read from files (keys,
    the verified roster), never a field-by-field copy of the settings."""
    from coordinator.config import CoordinatorConfig, ServiceConfig
    from secgan.settings import SiteConfig
    from sites.config import NodeConfig

    problems = []
    for process, settings in ((ServiceConfig, CoordinatorConfig), (NodeConfig, SiteConfig)):
        names = {f.name: f.type for f in dataclasses.fields(process)}
        if names.get("settings") not in (settings, settings.__name__):
            problems.append(f"{process.__name__} must hold its {settings.__name__} as `settings`")
        copied = sorted(set(names) & {f.name for f in dataclasses.fields(settings)})
        # the coordinator's and site's settings names too, under other names: limits/wire, endpoint, quorum...
        renamed = sorted(set(names) & {"limits", "endpoint", "quorum", "policy_summary", "accept_sources",
                                       "heartbeat_s", "bind", "image", "model", "train", "run_id"})
        if copied or renamed:
            problems.append(f"{process.__name__} copies settings of {settings.__name__}: {', '.join(copied + renamed)}")
    assert not problems, "\n".join(problems)


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


def _literal_constants(path: Path) -> list[tuple[str, str]]:
    """(repr of the value, "file:NAME") for each module-level NAME = <tuple of literals> or
    re.compile(<literal>): the kind of constant that gets copied instead of imported."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        if isinstance(value, ast.Call) and ast.unparse(value.func) in ("re.compile", "frozenset"):
            if not value.args or not isinstance(value.args[0], (ast.Constant, ast.Set, ast.Tuple)):
                continue
        elif not (isinstance(value, ast.Tuple) and value.elts
                  and all(isinstance(e, (ast.Constant, ast.Name)) for e in value.elts)):
            continue
        key = ast.dump(value)
        for t in targets:
            if isinstance(t, ast.Name):
                found.append((key, f"{path.relative_to(ROOT)}:{t.id}"))
    return found


def test_one_owner_per_constant() -> None:
    # A choice list or an identifier pattern is written once and imported everywhere else.
    by_value: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in _py_files(package):
            for key, where in _literal_constants(path):
                by_value.setdefault(key, []).append(where)
    copies = [" = ".join(places) for places in by_value.values() if len(places) > 1]
    assert not copies, "the same constant written in several places:\n" + "\n".join(copies)
