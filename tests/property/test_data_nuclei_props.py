"""Hypothesis: the instance map <-> 3-class map encoding of the nuclei phantom and readers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secgan.data.nuclei import BOUNDARY, INTERIOR, classes_to_instances, instances_to_classes

instance_maps = arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 4))


@settings(max_examples=200, deadline=None)
@given(inst=instance_maps)
def test_class_map_invariants(inst):
    cls = instances_to_classes(inst)
    assert cls.dtype == np.uint8 and cls.shape == inst.shape
    assert np.array_equal(cls > 0, inst > 0)  # foreground is exactly the nuclei
    h, w = inst.shape
    for y in range(h):
        for x in range(w):
            nbrs = [inst[y + dy, x + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                    if 0 <= y + dy < h and 0 <= x + dx < w]
            if cls[y, x] == INTERIOR:
                assert all(n == inst[y, x] for n in nbrs)  # an interior pixel has no other id next to it
            elif cls[y, x] == BOUNDARY:
                assert any(n != inst[y, x] for n in nbrs)  # a boundary pixel does


@settings(max_examples=100, deadline=None)
@given(inst=instance_maps, seed=st.integers(0, 2**32 - 1))
def test_class_map_depends_only_on_the_partition_not_the_ids(inst, seed):
    ids = np.unique(inst[inst > 0])
    new = np.random.default_rng(seed).permutation(np.arange(100, 100 + len(ids)))
    relabelled = inst.copy()
    for old, n in zip(ids, new):
        relabelled[inst == old] = n
    assert np.array_equal(instances_to_classes(inst), instances_to_classes(relabelled))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    return len(pairs) == len(set(p[0] for p in pairs)) == len(set(p[1] for p in pairs))


@settings(max_examples=150, deadline=None)
@given(discs=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39), st.integers(3, 6)), min_size=0, max_size=8))
def test_touching_discs_survive_the_round_trip(discs):
    """Nuclei drawn as discs of radius >= 3 without overlap (touching allowed) come back, each whole,
    from their 3-class map (up to the ids)."""
    inst = np.zeros((40, 40), np.int32)
    yy, xx = np.mgrid[0:40, 0:40]
    next_id = 1
    for cy, cx, r in discs:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (disc & (inst > 0)).any():
            continue
        inst[disc] = next_id
        next_id += 1
    back = classes_to_instances(instances_to_classes(inst))
    assert _same_partition(inst, back)
