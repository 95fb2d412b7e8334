from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from secgan.core.config import choices, load_dataclass, read_toml, rng, to_dict
from secgan.core.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rate: float = field(default=0.5, metadata=rng(min=0.0, max=1.0))


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = field(default=10, metadata=rng(min=1))
    mode: str = field(default="a", metadata=choices("a", "b"))
    flag: bool = False
    sigma: float | None = None
    tags: tuple[str, ...] = ()
    inner: Inner = Inner()


def test_builds_nested_dataclass() -> None:
    cfg = load_dataclass(Outer, {"name": "x", "steps": 3, "tags": ["p", "q"], "inner": {"rate": 1}})
    assert cfg == Outer(name="x", steps=3, tags=("p", "q"), inner=Inner(rate=1.0))
    assert to_dict(cfg)["tags"] == ["p", "q"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "stpes": 3}, "unknown key stpes"),
        ({"name": "x", "inner": {"rat": 1}}, "unknown key inner.rat"),
        ({}, "name: required key is missing"),
        ({"name": 3}, "name: expected a string"),
        ({"name": "x", "steps": "3"}, "steps: expected an integer"),
        ({"name": "x", "steps": True}, "steps: expected an integer"),
        ({"name": "x", "steps": 0}, "steps: must be >= 1"),
        ({"name": "x", "mode": "c"}, "mode: must be one of"),
        ({"name": "x", "flag": 1}, "flag: expected true or false"),
        ({"name": "x", "inner": {"rate": 1.5}}, "inner.rate: must be <= 1.0"),
        ({"name": "x", "inner": {"rate": float("nan")}}, "inner.rate: must be finite"),
        ({"name": "x", "inner": 3}, "inner: expected a table"),
        ({"name": "x", "tags": "abc"}, "tags: expected a list"),
        ({"name": "x", "tags": ["a", 1]}, "tags[1]: expected a string"),
        ({"name": "x", "sigma": "big"}, "sigma: expected"),
    ],
)
def test_errors_name_the_key(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_dataclass(Outer, data)
    assert needle in str(exc.value)


def test_read_toml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="missing.toml: config file not found"):
        read_toml(tmp_path / "missing.toml")


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_int_ranges_are_enforced_exactly(value: int) -> None:
    if value >= 1:
        assert load_dataclass(Outer, {"name": "n", "steps": value}).steps == value
    else:
        with pytest.raises(ConfigError, match="steps"):
            load_dataclass(Outer, {"name": "n", "steps": value})


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=4))
def test_unknown_keys_never_pass_silently(extra: dict) -> None:
    data = {"name": "n", **extra}
    known = {"name", "steps", "mode", "flag", "sigma", "tags", "inner"}
    if set(extra) - known:
        with pytest.raises(ConfigError, match="unknown key"):
            load_dataclass(Outer, data)
