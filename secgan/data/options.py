"""How a site's NIfTI folder is read: the one settings table that both an in-process run
(``[data.read]`` of a run config) and a site node or its audit (``[read]`` of ``site.toml``) use, so a
site sets its layout and tolerances once, where its data lives."""

from __future__ import annotations

from dataclasses import dataclass, field

from secgan.core.config import choices, rng
from secgan.data.brats import DEFAULT_AFFINE_TOLERANCE_MM, ReaderLimits
from secgan.data.dataset import CROP_MODES
from secgan.data.image_sites import IMAGE_LAYOUTS
from secgan.data.layouts import LAYOUT_CHOICES
from secgan.data.orientation import DEFAULT_OBLIQUE_TOLERANCE_DEG


@dataclass(frozen=True)
class ReadOptions:
    # folder layout: auto (detected and logged), brats2021 (2018-2021), brats2023 (GLI), brats2024-post, msd;
    # tiles (RGB tiles with instance masks) or isic (RGB images with a label CSV) for 2-D images
    layout: str = field(default="auto", metadata=choices(*LAYOUT_CHOICES, *IMAGE_LAYOUTS))
    # largest difference (mm) between the affines of one case's files
    affine_tolerance: float = field(default=DEFAULT_AFFINE_TOLERANCE_MM, metadata=rng(min=0.0, max=10.0))
    # largest tilt (degrees) of a voxel axis from the scanner axes; more is refused as oblique
    oblique_tolerance_deg: float = field(default=DEFAULT_OBLIQUE_TOLERANCE_DEG, metadata=rng(min=0.0, max=45.0))
    # voxel size (mm) every case is resampled to where its spacing differs
    voxel_mm: float = field(default=1.0, metadata=rng(min=0.1, max=10.0))
    # crop to the brain before resizing: auto (every folder but the built-in phantom's), brain, none
    crop: str = field(default="auto", metadata=choices(*CROP_MODES))

    def load_kwargs(self) -> dict:
        """The keyword arguments of :func:`secgan.data.dataset.load_site` these settings give."""
        limits = ReaderLimits(affine_atol=self.affine_tolerance, oblique_tolerance_deg=self.oblique_tolerance_deg)
        return {"layout": self.layout, "crop": self.crop, "voxel_mm": self.voxel_mm, "limits": limits}
