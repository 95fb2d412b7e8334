"""The one internal label convention every layout is mapped onto (before any slicing).

Internal labels keep the BraTS 2018-2021 meaning (:data:`secgan.core.spec.BRATS_LABELS`) and add the
post-treatment resection cavity as a class of its own, which is never tumour:

======  ===============================================  ===========  =============  ========
label   meaning                                          BraTS 18-21  BraTS 2023/24  MSD T01
======  ===============================================  ===========  =============  ========
0       background / healthy tissue                      0            0              0
1       necrotic or non-enhancing tumour core (NCR/NET)  1            1              2
2       oedema / surrounding FLAIR hyperintensity (ED)   2            2              1
4       enhancing tumour (ET)                            4            3              3
5       resection cavity (RC), not tumour                -            4 (post-tx)    -
======  ===============================================  ===========  =============  ========

Regions (:data:`secgan.core.spec.REGIONS`) are sets of internal labels, so WT = {1, 2, 4},
TC = {1, 4}, ET = {4} hold for every layout once mapped; the cavity is in none of them. In a
condition map the cavity is brain (inside the head) and in no tumour channel.
"""

from __future__ import annotations

# Resection cavity (BraTS 2024 post-treatment label 4): its own class, never part of a tumour region.
RESECTION_CAVITY = 5
INTERNAL_LABELS: tuple[int, ...] = (0, 1, 2, 4, RESECTION_CAVITY)
# Names used in reports (label counts per class).
LABEL_NAMES: dict[int, str] = {0: "background", 1: "ncr", 2: "ed", 4: "et", RESECTION_CAVITY: "rc"}
