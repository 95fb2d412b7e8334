"""The README's reference sections must list every config key and every subcommand."""

from __future__ import annotations

from pathlib import Path

from secgan.cli import COMMANDS
from secgan.commands.configref import iter_keys

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_readme_lists_every_config_key() -> None:
    from secgan.run.config import RunConfig
    from coordinator.config import CoordinatorConfig
    from secgan.settings import SiteConfig

    missing = [
        f"{cls.__name__}.{key}"
        for cls in (CoordinatorConfig, SiteConfig, RunConfig)
        for key, *_ in iter_keys(cls)
        if f"`{key}`" not in README
    ]
    assert not missing, "README configuration reference is stale; regenerate with python -m secgan.commands.configref --write README.md: " + ", ".join(missing)


def test_readme_lists_every_subcommand() -> None:
    missing = [name for name in COMMANDS if f"`secgan {name}`" not in README]
    assert not missing, f"README command-line reference misses: {missing}"


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:400]
    assert "make demo" in head and "make test" in head
