"""What differs between the demo's domains, as one small table: which phantom writes the hospitals
and the public cohort, which image spec the run configs carry, what the model changes, and what the
page says. Every stage of :mod:`secgan.commands.demo` is one function for all domains; it reads its
domain from here, the sites read their data through ``secgan.data.dataset.load_site`` (the folder's
layout) and the downstream score follows the spec's condition kind (:mod:`secgan.evaluation.image_utility`).

Public cohorts (what the pretraining sees; public data costs no privacy):

- brain: the brain phantom's public style (:data:`secgan.data.phantom.PUBLIC_STYLE`), another
  distribution than the hospitals';
- nuclei: tiles of the fourth organ of :data:`secgan.data.nuclei.ORGANS` (prostate: small, dense,
  elongated nuclei, its own stain), an organ none of the three hospitals (breast, liver, kidney) has;
- derm: the dermoscopy phantom with another seed, one institution: the general-dermatology
  institution's class mix and camera, with its own draws (close to hospital 1, unlike 2 and 3).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secgan.core.spec import ImageSpec

# tiles per slide case of the nuclei demo (a case, the patient, is several tiles of one slide)
NUCLEI_TILES = 3


@dataclass(frozen=True)
class DemoDomain:
    name: str
    # secgan.data.image_sites layout of the phantom's folders; None for brain volumes
    layout: str | None
    # how the data stage and the page name the hospitals' data and the patient
    data_what: str
    patient: str
    # the downstream task, as the stage line and the page's heading say it
    task: str
    # changes to recommended_settings' model and train tables
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def spec(self, size: int) -> ImageSpec:
        if self.layout is None:
            return ImageSpec(size=size)
        from secgan.data.image_sites import default_spec

        return default_spec(self.layout, size)

    def write(self, out: Path, *, sites: int, patients: int, seed: int, size: int, slices: int,
              test_fraction: float, public: bool = False) -> list[Path]:
        """The phantom hospitals (or, ``public``, the one-site public cohort) under ``out``."""
        if self.name == "brain":
            from secgan.data.phantom import PUBLIC_STYLE, SITE_STYLE, write_phantom

            return write_phantom(out, sites=sites, patients=patients, seed=seed, size=size, slices=slices,
                                 test_fraction=test_fraction, style=PUBLIC_STYLE if public else SITE_STYLE)
        if self.name == "nuclei":
            from secgan.data.nuclei import ORGANS, write_nuclei_phantom

            if not public:
                return write_nuclei_phantom(out, sites=sites, cases=patients, tiles=NUCLEI_TILES, seed=seed,
                                            size=size, test_fraction=test_fraction)
            written = write_nuclei_phantom(out, sites=len(ORGANS), cases=patients, tiles=NUCLEI_TILES, seed=seed,
                                           size=size, test_fraction=test_fraction)
            for other in written[:-1]:  # keep the organ none of the hospitals is
                shutil.rmtree(other)
            return written[-1:]
        from secgan.data.derm import write_derm_phantom

        return write_derm_phantom(out, sites=sites, patients=patients, seed=seed, size=size,
                                  test_fraction=test_fraction)


DOMAINS: dict[str, DemoDomain] = {
    "brain": DemoDomain("brain", None, "phantom brain MRI (4 modalities, tumour label maps)", "patient",
                        "downstream segmentation: U-Net trained on synthetic vs real, Dice on real test patients"),
    "nuclei": DemoDomain("nuclei", "tiles", "H&E-like nuclei tiles (RGB, instance maps; one organ per hospital)",
                         "slide case", "downstream nuclei segmentation: U-Net trained on synthetic vs real tiles, "
                         "Dice, F1 and AJI on real test cases"),
    # a class condition: the projection discriminator, with the hinge loss it is usually trained with
    "derm": DemoDomain("derm", "isic", "dermoscopy-like lesions (RGB, 7 imbalanced classes; 3 institutions)",
                       "patient", "train on synthetic, test on real (TSTR): classifier balanced accuracy, "
                       "macro AUC and per-class recall on real test patients",
                       model={"d_arch": "projection"}, train={"loss": "hinge"}),
}
DEMO_DOMAINS = tuple(DOMAINS)
