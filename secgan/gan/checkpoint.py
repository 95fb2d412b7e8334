"""Checkpoints without pickle: one safetensors file whose header metadata carries the structure as JSON.

A checkpoint file holds
- tensors ``G/<name>`` (the generator's state dict), ``opt/<param index>/<key>`` (optimiser state
  tensors, e.g. Adam's moments), ``rng/<name>`` (``torch.Generator.get_state()`` bytes as uint8);
- metadata key ``secgan`` = JSON: format version, step, run config, free-form meta, the optimiser's
  param groups and non-tensor state, and JSON-able RNG states (numpy bit generator states).

Writes are atomic (``secgan.core.fsio``: temp file, fsync, rename), so a crash leaves the previous
checkpoint intact. Loading never unpickles anything and checks every tensor against the model
built from the stored config. ``save_module_state`` / ``load_module_state`` do the same for one
module + optimiser (a site's discriminator).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from secgan.core.errors import ConfigError, DataError
from secgan.core.fsio import atomic_write_bytes
from secgan.core.spec import ImageSpec
from secgan.gan.config import ModelConfig

FORMAT = 1
CHECKPOINT_FILE = "checkpoint.safetensors"


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint directory (or a file path ending in .safetensors) -> the file itself."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / CHECKPOINT_FILE


def _unwrap_module(module: nn.Module) -> nn.Module:
    # Opacus's GradSampleModule prefixes names with "_module."; store the plain module's names.
    return getattr(module, "_module", module)


def _unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    # Opacus's DPOptimizer wraps the torch optimiser that owns the state.
    return getattr(optimizer, "original_optimizer", optimizer)


def _split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = _unwrap_optimizer(optimizer).state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{idx}/{k}"] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": True}
            else:
                entry[k] = {"value": v}
        state_json[str(idx)] = entry
    return tensors, {"param_groups": sd["param_groups"], "state": state_json}


def _join_optimizer(structure: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], where: Path) -> dict[str, Any]:
    try:
        state: dict[int, dict[str, Any]] = {}
        for idx, entry in structure["state"].items():
            st: dict[str, Any] = {}
            for k, spec in entry.items():
                st[k] = tensors[f"opt/{idx}/{k}"] if spec.get("tensor") else spec["value"]
            state[int(idx)] = st
        groups = []
        for g in structure["param_groups"]:
            groups.append({k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: optimiser state is malformed ({exc})") from None
    return {"state": state, "param_groups": groups}


def _write(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    meta = {"secgan": json.dumps(header, sort_keys=True, allow_nan=False)}
    atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    try:
        header = json.loads(meta["secgan"])
    except (KeyError, ValueError):
        raise DataError(f"{path}: checkpoint metadata is missing or not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f"{path}: unsupported checkpoint format {header.get('format') if isinstance(header, dict) else None!r}")
    return tensors, header


def _rng_split(rng_state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, other = {}, {}
    for name, value in rng_state.items():
        if isinstance(value, torch.Tensor):
            tensors[f"rng/{name}"] = value.to(torch.uint8)
        elif isinstance(value, (bytes, bytearray)):
            tensors[f"rng/{name}"] = torch.frombuffer(bytearray(value), dtype=torch.uint8)
        else:
            other[name] = value
    return tensors, other


def _check_state(where: Path, what: str, expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise DataError(f"{where}: {what} tensors do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape) or got[k].dtype != v.dtype:
            raise DataError(f"{where}: {what} tensor {k} is {tuple(got[k].shape)} {got[k].dtype}, model wants {tuple(v.shape)} {v.dtype}")


@dataclass
class Checkpoint:
    path: Path
    step: int
    generator_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng_state: dict[str, Any]
    config: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)
    # weights of the moving average of G (train.g_average > 0), else None
    average_state: dict[str, torch.Tensor] | None = None

    def generator_config(self) -> tuple[ImageSpec, ModelConfig]:
        """The stored image spec and model config (re-validated): what rebuilding G needs. The
        whole run config (privacy and data too) is :func:`secgan.run.config.stored_run_config`."""
        from secgan.core.config import load_dataclass

        if not isinstance(self.config, Mapping):
            raise DataError(f"{self.path}: checkpoint has no run config")
        try:
            image = load_dataclass(ImageSpec, self.config.get("image", {}), prefix="image.")
            model = load_dataclass(ModelConfig, self.config.get("model", {}), prefix="model.")
            model.check_fits(image)
        except ConfigError as exc:
            raise DataError(f"{self.path}: stored run config is invalid ({exc})") from None
        return image, model

    def build_generator(self, *, average: bool = True) -> nn.Module:
        """G from the stored config with the stored weights: the moving average of G when the run
        kept one (what samples, audits and evaluation use) unless ``average`` is False."""
        from secgan.gan.models import build_generator

        image, model = self.generator_config()
        G = build_generator(model, image)
        use_average = average and self.average_state is not None
        G.load_state_dict(self.average_state if use_average else self.generator_state)
        return G


def save_checkpoint(
    path: str | Path,
    *,
    generator: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    rng_state: Mapping[str, Any],
    meta: dict[str, Any],
    config: Mapping[str, Any] | None = None,
    average: nn.Module | None = None,
) -> Path:
    """Atomically write G, its optimiser, the step and RNG states (and G's moving average when
    ``average`` is given). Returns the file written.

    ``rng_state`` values: uint8 tensors / bytes (``torch.Generator.get_state()``) or JSON-able data.
    ``config``: ``secgan.core.config.to_dict(run_config)``, used to rebuild and check the model on load.
    """
    file = checkpoint_file(path)
    tensors = {f"G/{k}": v for k, v in _unwrap_module(generator).state_dict().items()}
    if average is not None:
        tensors.update({f"GA/{k}": v for k, v in _unwrap_module(average).state_dict().items()})
    opt_tensors, opt_struct = _split_optimizer(optimizer)
    rng_tensors, rng_json = _rng_split(rng_state)
    tensors.update(opt_tensors)
    tensors.update(rng_tensors)
    header = {
        "format": FORMAT,
        "kind": "generator",
        "step": int(step),
        "config": dict(config) if config is not None else None,
        "meta": meta,
        "optimizer": opt_struct,
        "rng": rng_json,
    }
    _write(file, tensors, header)
    return file


def load_checkpoint(path: str | Path) -> Checkpoint:
    file = checkpoint_file(path)
    tensors, header = _read(file)
    if header.get("kind") != "generator":
        raise DataError(f"{file}: not a generator checkpoint")
    g_state = {k[2:]: v for k, v in tensors.items() if k.startswith("G/")}
    avg_state = {k[3:]: v for k, v in tensors.items() if k.startswith("GA/")} or None
    rng = dict(header.get("rng") or {})
    rng.update({k[4:]: v for k, v in tensors.items() if k.startswith("rng/")})
    step = header.get("step")
    if not isinstance(step, int) or step < 0:
        raise DataError(f"{file}: step is missing or invalid")
    ck = Checkpoint(
        path=file,
        step=step,
        generator_state=g_state,
        optimizer_state=_join_optimizer(header.get("optimizer") or {}, tensors, file),
        rng_state=rng,
        config=header.get("config"),
        meta=header.get("meta") or {},
        average_state=avg_state,
    )
    if ck.config is not None:
        from secgan.gan.models import build_generator

        image, model = ck.generator_config()
        expected = build_generator(model, image).state_dict()
        _check_state(file, "generator", expected, g_state)
        if avg_state is not None:
            _check_state(file, "generator average", expected, avg_state)
    return ck


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], *, where: str | Path = "checkpoint") -> None:
    try:
        _unwrap_optimizer(optimizer).load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise DataError(f"{where}: optimiser state does not fit ({exc})") from None


def save_module_state(path: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer | None, meta: dict[str, Any]) -> Path:
    """Atomically write one module (e.g. a site's D, Opacus-wrapped or not) and its optimiser."""
    path = Path(path)
    tensors = {f"M/{k}": v for k, v in _unwrap_module(module).state_dict().items()}
    header: dict[str, Any] = {"format": FORMAT, "kind": "module", "meta": meta, "optimizer": None}
    if optimizer is not None:
        opt_tensors, header["optimizer"] = _split_optimizer(optimizer)
        tensors.update(opt_tensors)
    _write(path, tensors, header)
    return path


def load_module_state(path: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Load what ``save_module_state`` wrote into ``module`` (and ``optimizer``); returns the meta."""
    path = Path(path)
    tensors, header = _read(path)
    if header.get("kind") != "module":
        raise DataError(f"{path}: not a module state file")
    target = _unwrap_module(module)
    state = {k[2:]: v for k, v in tensors.items() if k.startswith("M/")}
    _check_state(path, "module", target.state_dict(), state)
    target.load_state_dict(state)
    if optimizer is not None:
        if header.get("optimizer") is None:
            raise DataError(f"{path}: no optimiser state stored")
        restore_optimizer(optimizer, _join_optimizer(header["optimizer"], tensors, path), where=path)
    return header.get("meta") or {}
