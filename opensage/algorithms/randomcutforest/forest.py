"""Random cut trees as flat arrays and the anomaly score of AWS's random-cut-forest library, vectorised over rows.

A forest holds, per node (all trees concatenated): ``left`` / ``right`` child (-1 at a leaf), ``dim`` /
``cut`` (row goes left when ``x[dim] <= cut``), the bounding box ``low`` / ``high`` of the node's sample rows
and ``mass`` (rows under it); ``roots`` and ``tree_mass`` per tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK = 4096  # rows scored at once


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
        return np.concatenate([self._score_block(X[i:i + BLOCK]) for i in range(0, len(X), BLOCK)] or
                              [np.zeros(0)])

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        total = np.zeros(len(X))
        for root, mass in zip(self.roots, self.tree_mass, strict=True):
            total += self._tree_score(X, int(root)) * math.log2(float(mass) + 1.0)
        return total / len(self.roots)

    def _tree_score(self, X: np.ndarray, root: int) -> np.ndarray:
        rows = np.arange(len(X))
        node = np.full(len(X), root)
        path = [node.copy()]
        while True:  # walk down to the leaves
            inner = self.left[node] >= 0
            if not inner.any():
                break
            go_left = X[rows, self.dim[node]] <= self.cut[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
            path.append(node.copy())
        steps = np.stack(path, axis=1)  # (rows, levels); a leaf repeats once reached
        depth = (steps[:, 1:] != steps[:, :-1]).sum(axis=1)
        leaf = steps[:, -1]
        seen = np.all(X == self.low[leaf], axis=1)
        leaf_mass = self.mass[leaf].astype(np.float64)
        tree_mass = float(self.mass[steps[0, 0]])
        damp = 1.0 - leaf_mass / (2.0 * tree_mass)
        score = np.where(seen, damp / (depth + np.log2(leaf_mass + 1.0)), 1.0 / (depth + 1.0))
        for level in range(int(depth.max(initial=0)) - 1, -1, -1):  # back up to the root
            active = depth > level
            at = steps[active, level]
            x = X[active]
            old = (self.high[at] - self.low[at]).sum(axis=1)
            new = (np.maximum(self.high[at], x) - np.minimum(self.low[at], x)).sum(axis=1)
            prob = np.where(new > 0, 1.0 - old / np.where(new > 0, new, 1.0), 0.0)
            score[active] = prob / (level + 1.0) + (1.0 - prob) * score[active]
        return score


class _Builder:
    def __init__(self, dim: int) -> None:
        self.left: list[int] = []
        self.right: list[int] = []
        self.dim: list[int] = []
        self.cut: list[float] = []
        self.low: list[np.ndarray] = []
        self.high: list[np.ndarray] = []
        self.mass: list[int] = []
        self.width = dim

    def _node(self, low: np.ndarray, high: np.ndarray, mass: int) -> int:
        self.left.append(-1), self.right.append(-1), self.dim.append(0), self.cut.append(0.0)
        self.low.append(low), self.high.append(high), self.mass.append(mass)
        return len(self.mass) - 1

    def tree(self, points: np.ndarray, rng: np.random.Generator) -> int:
        """Build one tree over ``points`` (iteratively: degenerate data can make deep trees)."""
        root = self._node(points.min(axis=0), points.max(axis=0), len(points))
        stack = [(root, points)]
        while stack:
            node, rows = stack.pop()
            span = self.high[node] - self.low[node]
            total = float(span.sum())
            if total <= 0.0:
                continue  # a leaf: every row equal
            dim = int(np.searchsorted(np.cumsum(span), rng.random() * total, side="right"))
            dim = min(dim, self.width - 1)
            while span[dim] <= 0.0:  # rounding landed on a zero-width dimension
                dim = int(rng.choice(np.flatnonzero(span > 0)))
            cut = self.low[node][dim] + rng.random() * span[dim]
            if cut >= self.high[node][dim]:
                cut = np.nextafter(self.high[node][dim], -np.inf)
            to_left = rows[:, dim] <= cut
            self.dim[node], self.cut[node] = dim, float(cut)
            for side, part in (("left", rows[to_left]), ("right", rows[~to_left])):
                child = self._node(part.min(axis=0), part.max(axis=0), len(part))
                getattr(self, side)[node] = child
                stack.append((child, part))
        return root


def build(X: np.ndarray, num_trees: int, samples_per_tree: int, seed: int = 0) -> Forest:
    """Each tree over ``samples_per_tree`` rows drawn without replacement (all rows when there are fewer)."""
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    builder = _Builder(X.shape[1])
    roots, masses = [], []
    size = min(samples_per_tree, len(X))
    for _ in range(num_trees):
        sample = X[rng.choice(len(X), size=size, replace=False)]
        roots.append(builder.tree(sample, rng))
        masses.append(size)
    return Forest(np.array(builder.left, np.int64), np.array(builder.right, np.int64),
                  np.array(builder.dim, np.int64), np.array(builder.cut, np.float64),
                  np.array(builder.low, np.float64), np.array(builder.high, np.float64),
                  np.array(builder.mass, np.int64), np.array(roots, np.int64), np.array(masses, np.int64))
