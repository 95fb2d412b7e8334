"""Feature spaces the audits measure distances in.

- ``pixels``: the images themselves, flattened. Sensitive to exact and lightly noised copies.
- ``embedding``: a small convolutional encoder trained at audit time, contrastively (SimCLR-style
  NT-Xent), on images the site may use anyway (its own members and non-members together, so neither
  side is favoured). Its two views of an image differ by a left-right flip, a shift of a few pixels,
  a small intensity change and noise, so the embedding is largely invariant to exactly the edits a
  generator could use to disguise a copied training slice. Weights start from a seeded
  ``torch.Generator``; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from secgan.core.errors import DataError


def pixel_features(images: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, C*H*W] float32."""
    images = np.asarray(images, dtype=np.float32)
    return images.reshape(images.shape[0], -1)


@dataclass(frozen=True)
class EmbeddingConfig:
    dim: int = 32
    width: int = 16
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    temperature: float = 0.2
    max_shift: int = 3
    noise: float = 0.05
    # value of the pixels a shift brings in: the images' background (-1 for normalised MRI; e.g. 1.0
    # for white RGB histology in [0, 1]); the encoder itself takes any channel count
    pad_value: float = -1.0


class _Encoder(nn.Module):
    def __init__(self, channels: int, size: int, width: int, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, s = channels, size
        c_out = width
        while s > 4:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in, c_out, s = c_out, min(c_out * 2, 8 * width), (s + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * s * s, dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def _init(module: nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=generator)
            nn.init.zeros_(m.bias)


def _augment(x: torch.Tensor, cfg: EmbeddingConfig, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    s = cfg.max_shift
    if s > 0:
        padded = F.pad(x, (s, s, s, s), value=cfg.pad_value)  # the images' background
        offs = torch.randint(0, 2 * s + 1, (n, 2), generator=g)
        x = torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
    scale = 1.0 + 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    return x * scale + cfg.noise * torch.randn(x.shape, generator=g)


def _nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


class Embedding:
    """A trained encoder; ``transform`` maps images to L2-normalised vectors."""

    def __init__(self, encoder: _Encoder, losses: list[float], config: EmbeddingConfig, seed: int) -> None:
        self._encoder = encoder
        self.losses = losses
        self.config = config
        self.seed = seed
        self.cached = False

    @torch.no_grad()
    def transform(self, images: np.ndarray, *, batch: int = 512) -> np.ndarray:
        self._encoder.eval()
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        out = [F.normalize(self._encoder(x[i : i + batch]), dim=1) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy().astype(np.float32)

    def describe(self) -> dict:
        return {
            "name": "contrastive-conv-encoder",
            "version": 1,
            "seed": self.seed,
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "from_cache": self.cached,
        }


EMBEDDING_CACHE_VERSION = 1


def embedding_key(images: np.ndarray, *, seed: int, config: EmbeddingConfig) -> str:
    """What a trained embedding depends on (the images, the seed, the config, this code's version)."""
    import hashlib
    import json

    h = hashlib.sha256(b"secgan.audits.embedding\0")
    h.update(json.dumps([EMBEDDING_CACHE_VERSION, seed, repr(config), list(images.shape), str(images.dtype)]).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def train_embedding(images: np.ndarray, *, seed: int, config: EmbeddingConfig = EmbeddingConfig(),
                    cache_dir=None) -> Embedding:
    """Train the contrastive encoder on ``images`` [N, C, H, W] (N >= 4).

    With ``cache_dir``, an encoder already trained on exactly these images with this seed and config
    is loaded from ``cache_dir/embedding-<key>.safetensors`` instead (the key is a hash of all of
    them, so any change of the data invalidates it), and a newly trained one is stored there (0600).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] < 4:
        raise DataError(f"embedding training needs [N>=4, C, H, W] images, got shape {images.shape}")
    if cache_dir is not None:
        from pathlib import Path

        path = Path(cache_dir) / f"embedding-{embedding_key(images, seed=seed, config=config)}.safetensors"
        cached = _load_cached(path, images.shape, config, seed)
        if cached is not None:
            return cached
        emb = train_embedding(images, seed=seed, config=config)
        _store_cached(path, emb)
        return emb
    g = torch.Generator().manual_seed(seed)
    enc = _Encoder(images.shape[1], images.shape[2], config.width, config.dim)
    _init(enc, g)
    opt = torch.optim.Adam(enc.parameters(), lr=config.lr)
    x_all = torch.as_tensor(images)
    bs = max(2, min(config.batch_size, len(x_all)))
    losses = []
    enc.train()
    for _ in range(config.epochs):
        perm = torch.randperm(len(x_all), generator=g)
        total, count = 0.0, 0
        for i in range(0, len(perm) - 1, bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:
                continue
            x = x_all[idx]
            v1, v2 = _augment(x, config, g), _augment(x, config, g)
            loss = _nt_xent(enc.head(enc(v1)), enc.head(enc(v2)), config.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
    return Embedding(enc, losses, config, seed)


def _store_cached(path, emb: Embedding) -> None:
    import json

    from safetensors.torch import save

    from secgan.core.fsio import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in emb._encoder.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"losses": json.dumps(emb.losses)}), mode=0o600)


def _load_cached(path, shape, config: EmbeddingConfig, seed: int) -> Embedding | None:
    """The cached encoder, or None (missing or unreadable: then it is trained again)."""
    import json

    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    enc = _Encoder(shape[1], shape[2], config.width, config.dim)
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
            losses = json.loads((fh.metadata() or {}).get("losses", "[]"))
        enc.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError):
        return None
    emb = Embedding(enc, [float(x) for x in losses], config, seed)
    emb.cached = True
    return emb
