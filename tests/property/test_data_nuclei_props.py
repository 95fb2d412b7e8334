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


def _draw(discs, *, gap: bool) -> np.ndarray:
    inst = np.zeros((40, 40), np.int32)
    yy, xx = np.mgrid[0:40, 0:40]
    next_id = 1
    for cy, cx, r in discs:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        reach = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 1.5) ** 2 if gap else disc
        if (reach & (inst > 0)).any():
            continue
        inst[disc] = next_id
        next_id += 1
    return inst


DISCS = st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39), st.integers(3, 6)), min_size=0, max_size=8)


@settings(max_examples=150, deadline=None)
@given(discs=DISCS)
def test_separated_discs_survive_the_round_trip(discs):
    """Nuclei drawn as discs of radius >= 3, at least one background pixel apart (cut by the tile's
    edge or not), come back, each whole, from their 3-class map (up to the ids)."""
    inst = _draw(discs, gap=True)
    assert _same_partition(inst, classes_to_instances(instances_to_classes(inst)))


@settings(max_examples=150, deadline=None)
@given(discs=DISCS)
def test_touching_discs_keep_their_interiors(discs):
    """Touching nuclei: the 3-class map is lossy where they meet (a boundary pixel equally near two
    interiors joins one of them), but every interior pixel keeps its own nucleus and no two nuclei's
    interiors merge."""
    inst = _draw(discs, gap=False)
    classes = instances_to_classes(inst)
    back = classes_to_instances(classes)
    interior = classes == 1
    assert np.array_equal(inst > 0, back > 0)
    pairs = set(zip(inst[interior].tolist(), back[interior].tolist()))
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_a_boundary_pixel_between_two_touching_nuclei_joins_one_of_them():
    """The case hypothesis found: two discs cut by the tile's corner touch at (2, 4), a boundary pixel
    as near to one interior as to the other; it may change nucleus, and nothing else does."""
    inst = _draw([(0, 6, 3), (6, 0, 5)], gap=False)
    back = classes_to_instances(instances_to_classes(inst))
    moved = (inst > 0) & (back > 0) & (inst != back)
    assert np.argwhere(moved).tolist() == [[2, 4]]
