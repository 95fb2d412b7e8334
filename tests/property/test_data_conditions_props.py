"""Hypothesis: procedural label maps keep their invariants for any size, seed and batch."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.gan.conditions import ProceduralConditions


@settings(max_examples=60, deadline=None)
@given(size=st.integers(8, 80), n=st.integers(1, 6), seed=st.integers(0, 2**63 - 1))
def test_procedural_invariants(size, n, seed):
    c = ProceduralConditions(size).draw(n, generator=torch.Generator().manual_seed(seed))
    assert c.shape == (n, 4, size, size) and c.dtype == torch.float32
    assert torch.all((c == 0) | (c == 1))  # values in {0, 1}
    assert torch.all(c[:, 1:].sum(dim=1) <= 1)  # ncr, ed, et disjoint
    tumour = c[:, 1:].amax(dim=1)
    assert torch.all(tumour <= c[:, 0])  # tumour inside the brain
    assert torch.all(c[:, 0].sum(dim=(1, 2)) > 0)  # there is a brain
    again = ProceduralConditions(size).draw(n, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(c, again)
