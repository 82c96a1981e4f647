"""k-NN's dimension reduction and search index, as SageMaker's faiss-based container builds them, in numpy.

Costs are what the search minimises: the squared L2 distance, or minus the inner product (``INNER_PRODUCT``;
``COSINE`` is the inner product of L2-normalised rows). ``faiss.Flat`` is exact; ``faiss.IVFFlat`` assigns
rows to ``nlist`` k-means lists and searches the ``nprobe`` lists nearest each query; ``faiss.IVFPQ`` also
replaces each row by the product-quantised residual to its list's centroid (``m`` sub-vectors, up to 256
codes each) and ranks by the approximate cost, as faiss does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHUNK = 2048  # query rows per block of the (queries x rows) cost matrix
# Query x row pairs from which exact L2 search goes through scikit-learn (below: numpy, so that serving a small
# request needs no scikit-learn import; the knn training zygote has it imported already).
FUSED_MIN_PAIRS = 1 << 22
PQ_CODES = 256
PQ_TRAIN_ROWS = 20_000


# ---------------------------------------------------------------------------------------------- reduction


def projection(kind: str, feature_dim: int, target: int, seed: int = 0) -> np.ndarray:
    """(feature_dim, target) float32 matrix: rows projected with ``x @ P`` keep distances in expectation."""
    rng = np.random.default_rng(seed)
    if kind == "sign":
        return (rng.choice((-1.0, 1.0), size=(feature_dim, target)) / math.sqrt(target)).astype(np.float32)
    # fjlt: x -> sample_t(H D x) * sqrt(d_pad / t) / sqrt(d_pad), H the Walsh-Hadamard matrix of the padded width.
    padded = 1 << max(0, (feature_dim - 1).bit_length())
    signs = rng.choice((-1.0, 1.0), size=feature_dim)
    columns = rng.choice(padded, size=target, replace=padded < target)
    parity = np.zeros((feature_dim, target), dtype=np.int64)
    both = np.arange(feature_dim)[:, None] & columns[None, :]
    while np.any(both):  # H[i, c] = (-1) ** popcount(i & c)
        parity ^= both & 1
        both >>= 1
    hadamard = 1.0 - 2.0 * parity
    return (signs[:, None] * hadamard / math.sqrt(target)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- search helpers


def _costs(queries: np.ndarray, rows: np.ndarray, metric: str, row_norms: np.ndarray | None = None) -> np.ndarray:
    inner = queries @ rows.T
    if metric != "L2":
        return -inner
    norms = np.einsum("ij,ij->i", rows, rows) if row_norms is None else row_norms
    return np.maximum(np.einsum("ij,ij->i", queries, queries)[:, None] - 2.0 * inner + norms[None, :], 0.0)


def _top(costs: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k lowest costs of each row (ascending; ties keep the lower row id) and their ids."""
    if costs.shape[1] > k:
        part = np.argpartition(costs, k - 1, axis=1)[:, :k]
        costs, ids = np.take_along_axis(costs, part, 1), np.take_along_axis(ids, part, 1)
    order = np.lexsort((ids, costs), axis=1)
    return np.take_along_axis(costs, order, 1), np.take_along_axis(ids, order, 1)


def _fused_l2(queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 search through scikit-learn's brute force (its fused ``ArgKmin``: chunks of queries x rows
    upcast to float64, the k best kept per chunk in parallel threads) rather than whole block x rows cost
    matrices, their temporaries and an argpartition (3-6x the CPU, measured). Ties keep the lower row id."""
    from sklearn.neighbors import NearestNeighbors

    costs, ids = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="sqeuclidean").fit(rows).kneighbors(
        queries)
    order = np.lexsort((ids, costs), axis=1)
    return np.take_along_axis(costs, order, 1), np.take_along_axis(ids, order, 1)


def _kmeans(rows: np.ndarray, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    fit = KMeans(n_clusters=clusters, n_init=1, max_iter=50, random_state=seed).fit(rows)
    return fit.cluster_centers_.astype(np.float32), fit.labels_.astype(np.int64)


# ---------------------------------------------------------------------------------------------- the index


@dataclass
class Index:
    """The searchable sample: ``vectors`` (Flat / IVFFlat) or ``codes`` + ``codebooks`` (IVFPQ)."""

    kind: str
    metric: str
    vectors: np.ndarray
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    assign: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    codebooks: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))
    nprobe: int = 1

    @property
    def size(self) -> int:
        return int(self.assign.shape[0] if self.kind == "faiss.IVFPQ" else self.vectors.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors, "centroids": self.centroids, "assign": self.assign,
                "codebooks": self.codebooks, "codes": self.codes}

    @classmethod
    def from_arrays(cls, kind: str, metric: str, nprobe: int, arrays: dict[str, Any]) -> Index:
        return cls(kind, metric, arrays["vectors"], arrays["centroids"], arrays["assign"], arrays["codebooks"],
                   arrays["codes"], nprobe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(costs, row ids) of the k best rows per query, best first (fewer when the index is smaller)."""
        k = min(k, self.size)
        queries = np.asarray(queries, dtype=np.float32)
        if self.kind == "faiss.Flat" and self.metric == "L2" and len(queries) * self.size >= FUSED_MIN_PAIRS:
            return _fused_l2(queries, self.vectors, k)
        if self.kind == "faiss.Flat":
            norms = np.einsum("ij,ij->i", self.vectors, self.vectors)
            out = [_top(_costs(block, self.vectors, self.metric, norms),
                        np.broadcast_to(np.arange(self.size), (len(block), self.size)), k)
                   for block in np.array_split(queries, max(1, math.ceil(len(queries) / CHUNK)))]
            return np.concatenate([c for c, _ in out]), np.concatenate([i for _, i in out])
        return self._search_lists(queries, k)

    def _search_lists(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nprobe = min(self.nprobe, len(self.centroids))
        probes = np.argpartition(_costs(queries, self.centroids, self.metric), nprobe - 1, axis=1)[:, :nprobe]
        best = np.full((len(queries), k), np.inf)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for lst in range(len(self.centroids)):
            which = np.flatnonzero((probes == lst).any(axis=1))
            members = np.flatnonzero(self.assign == lst)
            if not len(which) or not len(members):
                continue
            costs = self._list_costs(queries[which], lst, members)
            merged_costs = np.concatenate([best[which], costs], axis=1)
            merged_ids = np.concatenate([ids[which], np.broadcast_to(members, costs.shape)], axis=1)
            best[which], ids[which] = _top(merged_costs, merged_ids, k)
        return best, ids

    def _list_costs(self, queries: np.ndarray, lst: int, members: np.ndarray) -> np.ndarray:
        if self.kind == "faiss.IVFFlat":
            return _costs(queries, self.vectors[members], self.metric)
        m, _, sub = self.codebooks.shape
        codes = self.codes[members].astype(np.int64)
        centroid = self.centroids[lst]
        if self.metric == "L2":
            residual = (queries - centroid).reshape(len(queries), m, sub)
            tables = ((residual[:, :, None, :] - self.codebooks[None]) ** 2).sum(axis=3)  # (q, m, codes)
            return tables[:, np.arange(m)[None, :], codes].sum(axis=2)
        tables = np.einsum("qms,mcs->qmc", queries.reshape(len(queries), m, sub), self.codebooks)
        return -(queries @ centroid)[:, None] - tables[:, np.arange(m)[None, :], codes].sum(axis=2)


def default_nlist(rows: int) -> int:
    return max(1, min(rows, round(math.sqrt(rows))))


def default_nprobe(nlist: int) -> int:
    """Lists searched per query: about 2 sqrt(nlist), so recall stays near exact search."""
    return max(1, min(nlist, 2 * math.ceil(math.sqrt(nlist))))


def build(kind: str, metric: str, vectors: np.ndarray, nlist: int | None, pq_m: int | None,
          seed: int = 0) -> Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "faiss.Flat":
        return Index(kind, metric, vectors)
    nlist = min(nlist or default_nlist(len(vectors)), len(vectors))
    centroids, assign = _kmeans(vectors, nlist, seed)
    index = Index(kind, metric, vectors, centroids, assign, nprobe=default_nprobe(nlist))
    if kind == "faiss.IVFFlat":
        return index
    m = int(pq_m or 1)
    sub = vectors.shape[1] // m
    residuals = (vectors - centroids[assign]).reshape(len(vectors), m, sub)
    rng = np.random.default_rng(seed)
    sample = residuals[rng.permutation(len(vectors))[:PQ_TRAIN_ROWS]]
    n_codes = min(PQ_CODES, len(sample))
    codebooks = np.zeros((m, n_codes, sub), np.float32)
    codes = np.zeros((len(vectors), m), np.uint8)
    for j in range(m):
        codebooks[j], _ = _kmeans(sample[:, j, :], n_codes, seed + j)
        codes[:, j] = _costs(residuals[:, j, :], codebooks[j], "L2").argmin(axis=1)
    return Index(kind, metric, np.zeros((0, vectors.shape[1]), np.float32), centroids, assign, codebooks, codes,
                 index.nprobe)
