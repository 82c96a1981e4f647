"""Random cut trees as flat arrays and the anomaly score of AWS's random-cut-forest library, both in numpy calls
over whole levels (of every tree at once), never a Python step per node or per tree.

A forest holds, per node (all trees concatenated): ``left`` / ``right`` child (-1 at a leaf), ``dim`` /
``cut`` (row goes left when ``x[dim] <= cut``), the bounding box ``low`` / ``high`` of the node's sample rows
and ``mass`` (rows under it); ``roots`` and ``tree_mass`` per tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SCORE_VALUES = 1 << 20  # (row, tree, feature) values scored at once: a block's (pairs, d) arrays stay ~8 MB
BUILD_VALUES = 1 << 22  # sample values (points x features) of the trees grown together: ~32 MB
REDUCEAT_MAX_WIDTH = 16  # features up to which a level's boxes come from reduceat (see _boxes)


@dataclass
class Forest:
    left: np.ndarray
    right: np.ndarray
    dim: np.ndarray
    cut: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mass: np.ndarray
    roots: np.ndarray
    tree_mass: np.ndarray

    def __post_init__(self) -> None:
        inner = self.left >= 0
        if not np.array_equal(self.right[inner], self.left[inner] + 1):  # both builders ever used made them so
            raise ValueError("random cut forest: a node's right child must follow its left child")

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> Forest:
        return cls(**{name: arrays[name] for name in cls.__dataclass_fields__})

    @property
    def feature_dim(self) -> int:
        return int(self.low.shape[1])

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        rows = max(1, SCORE_VALUES // max(1, len(self.roots) * X.shape[1]))
        return np.concatenate([self._score_block(X[i:i + rows]) for i in range(0, len(X), rows)] or
                              [np.zeros(0)])

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        """Every (row, tree) pair walked at once, pair ``p`` = row ``p // trees``, tree ``p % trees``: a
        level's numpy calls cover all trees, and only the pairs still above their leaf (one call per level and
        tree took ~57 ms for a single row of 100 trees: a served request)."""
        trees = len(self.roots)
        X = np.ascontiguousarray(X)
        values, width = X.ravel(), X.shape[1]
        pair_row = np.repeat(np.arange(len(X)), trees)
        pair_at = pair_row * width  # a pair's row in ``values``
        node = np.tile(self.roots, len(X))
        # levels[l] = (pairs whose node at depth l is inner, that node): exactly the pairs the score backs up
        # through at level l
        levels: list[tuple[np.ndarray, np.ndarray]] = []
        alive = np.arange(len(node))
        while alive.size:
            at = node[alive]
            child = self.left[at]
            inner = child >= 0
            alive, at, child = alive[inner], at[inner], child[inner]
            if not alive.size:
                break
            levels.append((alive, at))
            node[alive] = child + (values[pair_at[alive] + self.dim[at]] > self.cut[at])  # right = left + 1
        depth = np.zeros(len(node), dtype=np.int64)
        for alive, _ in levels:
            depth[alive] += 1
        leaf = node
        seen = np.all(X[pair_row] == self.low[leaf], axis=1)
        leaf_mass = self.mass[leaf].astype(np.float64)
        tree_mass = np.tile(self.tree_mass, len(X)).astype(np.float64)
        damp = 1.0 - leaf_mass / (2.0 * tree_mass)
        score = np.where(seen, damp / (depth + np.log2(leaf_mass + 1.0)), 1.0 / (depth + 1.0))
        # Back up to the root. A pair whose row lies inside a node's box lies inside every ancestor's (a box
        # bounds its subtree's rows): there and above, the box with the row added is the box itself, the
        # separation probability exactly 0 and the score unchanged, so the pair leaves the loop.
        inside = np.zeros(len(node), dtype=bool)
        for level in range(len(levels) - 1, -1, -1):
            active, at = levels[level]
            outside = ~inside[active]
            active, at = active[outside], at[outside]
            if not active.size:
                continue  # pairs of shallower leaves start above
            x = X[pair_row[active]]
            high, low = self.high[at], self.low[at]
            old = (high - low).sum(axis=1)
            new = (np.maximum(high, x) - np.minimum(low, x)).sum(axis=1)
            prob = np.where(new > 0, 1.0 - old / np.where(new > 0, new, 1.0), 0.0)
            score[active] = prob / (level + 1.0) + (1.0 - prob) * score[active]
            inside[active[np.all((x >= low) & (x <= high), axis=1)]] = True
        per_tree = score.reshape(len(X), trees)
        total = np.zeros(len(X))
        for tree, mass in enumerate(self.tree_mass):  # tree by tree, as the scores are defined to add up
            total += per_tree[:, tree] * math.log2(float(mass) + 1.0)
        return total / trees


def _cut_dimensions(span: np.ndarray, total: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per node, a dimension drawn with probability proportional to its span (the random cut's rule)."""
    dim = (np.cumsum(span, axis=1) <= (rng.random(len(span)) * total)[:, None]).sum(axis=1)
    dim = np.minimum(dim, span.shape[1] - 1)
    for node in np.flatnonzero(span[np.arange(len(span)), dim] <= 0.0):  # rounding landed on a zero width
        dim[node] = rng.choice(np.flatnonzero(span[node] > 0))
    return dim


def _boxes(points: np.ndarray, starts: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run's (min, max) of points grouped in runs (``starts``, ``mass``). ``np.minimum.reduceat`` along
    axis 0 where rows are narrow; wider, it costs ~18 ns a value (11 s to build 100 trees of 256 at d = 1,000,
    3.8 s node by node), so one (runs, width, d) min / max per power-of-two width, a run padded with its own
    last row (3.8 s; at d = 5 it is the slower: 0.11 s against 0.05 s)."""
    if points.shape[1] <= REDUCEAT_MAX_WIDTH:
        return np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts)
    low, high = np.empty((len(starts), points.shape[1])), np.empty((len(starts), points.shape[1]))
    width = 1 << np.ceil(np.log2(mass)).astype(np.int64)
    for w in np.unique(width):
        runs = np.flatnonzero(width == w)
        block = points[starts[runs, None] + np.minimum(np.arange(w), mass[runs, None] - 1)]
        low[runs], high[runs] = block.min(axis=1), block.max(axis=1)
    return low, high


def build(X: np.ndarray, num_trees: int, samples_per_tree: int, seed: int = 0) -> Forest:
    """Each tree over ``samples_per_tree`` rows drawn without replacement (all rows when there are fewer).

    Trees grow together, a level at a time (``_grow``), as many at once as keep their sample points within
    ``BUILD_VALUES`` (node by node in Python took ~30 µs a node: 1.0-1.5 s for the default 100 trees of 256,
    20 s for 200 of 2,048). Nodes are numbered tree group by tree group, level by level; a node's children are
    adjacent (``right = left + 1``); a node whose points are all equal is a leaf."""
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    size = min(samples_per_tree, len(X))
    group = max(1, BUILD_VALUES // max(1, size * X.shape[1]))
    levels: list[dict[str, np.ndarray]] = []
    roots = []
    first = 0  # the next node id
    for start in range(0, num_trees, group):
        trees = min(group, num_trees - start)
        points = X[np.concatenate([rng.choice(len(X), size=size, replace=False) for _ in range(trees)])]
        roots.append(first + np.arange(trees, dtype=np.int64))
        grown = _grow(points, trees, size, rng, first)
        first += sum(len(level["mass"]) for level in grown)
        levels += grown
    nodes = {name: np.concatenate([level[name] for level in levels]) for name in levels[0]}  # one copy of each
    left = nodes["left"]
    return Forest(left, np.where(left >= 0, left + 1, -1), nodes["dim"], nodes["cut"], nodes["low"], nodes["high"],
                  nodes["mass"].astype(np.int64), np.concatenate(roots), np.full(num_trees, size, dtype=np.int64))


def _grow(points: np.ndarray, trees: int, size: int, rng: np.random.Generator, first: int,
          ) -> list[dict[str, np.ndarray]]:
    """``trees`` trees over consecutive runs of ``size`` points, every tree a level at a time: the points are kept
    grouped by the node they are in, a level's boxes come from one segmented min / max over those groups, and its
    cuts are drawn together. Node ids start at ``first``, the roots' ``first`` .. ``first + trees - 1``; returns
    the levels' node arrays."""
    node_of = np.repeat(np.arange(trees), size)  # each point's node (within its level), ascending
    levels: list[dict[str, np.ndarray]] = []
    base = first  # the current level's first node id
    while len(points):
        starts = np.flatnonzero(np.r_[True, node_of[1:] != node_of[:-1]])
        mass = np.diff(np.r_[starts, len(points)])
        low, high = _boxes(points, starts, mass)
        span = high - low
        total = span.sum(axis=1)
        inner = total > 0.0
        count = len(starts)
        left = np.full(count, -1, dtype=np.int64)
        dim = np.zeros(count, dtype=np.int64)
        cut = np.zeros(count)
        k = int(inner.sum())
        left[inner] = base + count + 2 * np.arange(k)
        if k:
            dim[inner] = _cut_dimensions(span[inner], total[inner], rng)
            rows = np.flatnonzero(inner)
            chosen = dim[rows]
            cut[inner] = low[rows, chosen] + rng.random(k) * span[rows, chosen]
            over = cut[rows] >= high[rows, chosen]
            cut[rows[over]] = np.nextafter(high[rows[over], chosen[over]], -np.inf)
        levels.append({"left": left, "dim": dim, "cut": cut, "low": low, "high": high, "mass": mass})
        # the points of inner nodes move to a child (left when x[dim] <= cut), still grouped by node
        local = np.repeat(np.arange(count), mass)
        keep = inner[local]
        points, local = points[keep], local[keep]
        right_side = points[np.arange(len(points)), dim[local]] > cut[local]
        node_of = left[local] + right_side
        order = np.argsort(node_of, kind="stable")
        points, node_of = points[order], node_of[order]
        base += count
    return levels
