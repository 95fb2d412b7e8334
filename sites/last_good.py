"""A discriminator's last good state: finite checks, snapshots and roll-back of (module, optimiser).

A D whose parameters, buffers or optimiser state are not finite after an update is rolled back to
its snapshot from before the step, so a poisoned D is never kept, saved or restored.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from secgan.core.logs import get_logger

log = get_logger("sites.learner")

State = tuple[dict[str, torch.Tensor], dict[str, Any]]


def plain_parts(module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The plain module and the torch optimiser that owns the state (Opacus wrappers removed)."""
    return getattr(module, "_module", module), getattr(opt, "original_optimizer", opt)


def is_finite(module: torch.nn.Module, opt: torch.optim.Optimizer) -> bool:
    """The module's parameters, buffers and the optimiser's state are all finite."""
    module, opt = plain_parts(module, opt)
    tensors = [*module.state_dict().values()]
    tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def snapshot(module: torch.nn.Module, opt: torch.optim.Optimizer) -> State:
    module, opt = plain_parts(module, opt)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, copy.deepcopy(opt.state_dict())


def roll_back(module: torch.nn.Module, opt: torch.optim.Optimizer, state: State, *, index: int) -> None:
    """Back to ``state``; no half-computed gradient or per-sample state survives. Returns None."""
    module, opt = plain_parts(module, opt)
    module.load_state_dict(state[0])
    opt.load_state_dict(state[1])
    for p in module.parameters():
        p.grad = None
        if hasattr(p, "grad_sample"):
            p.grad_sample = None
    log.warning("discriminator_rolled_back", index=index, reason="non_finite")
    return None
