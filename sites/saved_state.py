"""A site's saved discriminators (``discriminator*.safetensors`` beside the ledger): written only
when finite, restored only when finite and never ahead of the ledger that paid for them.

In mode "off" (nothing private) the sampling stream is saved too, so a resumed run samples as an
uninterrupted one would; the DP modes start fresh streams at every restart instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from secgan.core.errors import PrivacyError
from secgan.core.logs import get_logger
from secgan.gan.checkpoint import load_module_state, save_module_state

from sites.discriminators import Modules
from sites.last_good import is_finite, roll_back, snapshot

log = get_logger("sites.learner")


def save_discriminators(modules: Modules, files: list[Path], *, mode: str, releases: int,
                        rng: np.random.Generator) -> None:
    for i, ((module, opt), path) in enumerate(zip(modules, files)):
        if not is_finite(module, opt):  # never reached after a rolled-back step; never write a poisoned D
            log.error("discriminator_not_saved", index=i, reason="non_finite")
            continue
        meta = {"mode": mode, "releases": releases}
        if mode == "off":
            meta["rng"] = rng.bit_generator.state
        save_module_state(path, module, opt, meta)


def restore_discriminators(modules: Modules, files: list[Path], *, mode: str, releases: int,
                           rng: np.random.Generator) -> None:
    for i, ((module, opt), path) in enumerate(zip(modules, files)):
        if not path.exists():
            continue
        fresh = snapshot(module, opt)
        meta = load_module_state(path, module, opt)
        if not is_finite(module, opt):
            # a poisoned D (written by an older version) is never restored: start this D afresh
            # (data-independent initialisation); the ledger keeps everything it charged
            roll_back(module, opt, fresh, index=i)
            log.warning("discriminator_state_discarded", path=path.name, reason="non_finite")
        if meta.get("mode") != mode:
            raise PrivacyError(f"{path}: saved for privacy mode {meta.get('mode')!r}, not {mode!r}")
        if int(meta.get("releases", 0)) > releases:
            raise PrivacyError(
                f"{path}: discriminator saved after {meta.get('releases')} releases but the ledger counts "
                f"{releases}; the ledger must never be behind the model it paid for"
            )
        if mode == "off" and "rng" in meta and int(meta.get("releases", -1)) == releases:
            try:
                rng.bit_generator.state = meta["rng"]
            except (TypeError, ValueError, KeyError) as exc:
                raise PrivacyError(f"{path}: site state is malformed ({exc})") from None
