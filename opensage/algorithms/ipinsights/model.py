"""IP Insights' data handling (entity hashing, IPv4 prefixes, CSV rows) and the numpy forward pass served."""

from __future__ import annotations

import csv
import io
import ipaddress
import zlib
from typing import Any

import numpy as np

ALGORITHM = "ipinsights"
PREFIXES = (8, 16, 24, 32)


def entity_buckets(entities: list[str], buckets: int) -> np.ndarray:
    return np.array([zlib.crc32(e.encode("utf-8")) % buckets for e in entities], dtype=np.int64)


def ip_integers(addresses: list[str]) -> tuple[np.ndarray, list[int]]:
    """(uint32 values of the valid IPv4 addresses, indices of the invalid ones)."""
    values, bad = [], []
    for i, text in enumerate(addresses):
        try:
            values.append(int(ipaddress.IPv4Address(text.strip())))
        except ValueError:
            bad.append(i)
            values.append(0)
    return np.array(values, dtype=np.int64), bad


def prefix_buckets(ips: np.ndarray, buckets: int) -> np.ndarray:
    """(n, 4) bucket ids of each address's /8, /16, /24, /32 prefix (a multiplicative hash per length)."""
    out = np.empty((len(ips), len(PREFIXES)), dtype=np.int64)
    for j, bits in enumerate(PREFIXES):
        prefix = (ips >> (32 - bits)).astype(np.uint64)
        mixed = (prefix + np.uint64(bits << 32)) * np.uint64(0x9E3779B97F4A7C15)
        out[:, j] = ((mixed >> np.uint64(17)) % np.uint64(buckets)).astype(np.int64)
    return out


def parse_pairs(text: str) -> tuple[list[str], list[str]]:
    """CSV rows ``entity_id, ipv4`` (blank lines skipped); ValueError names a row without two columns."""
    entities, ips = [], []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValueError(f"row {number} has {len(row)} column(s); expected entity_id, ipv4_address")
        entities.append(row[0].strip())
        ips.append(row[1].strip())
    return entities, ips


class IPInsightsModel:
    """Embedding tables and encoder weights; ``embed`` mirrors the torch module of train.py."""

    def __init__(self, entity: np.ndarray, ip: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.entity, self.ip, self.layers = entity, ip, layers

    def embed(self, entities: list[str], ips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = self.entity[entity_buckets(entities, len(self.entity))]
        h = self.ip[prefix_buckets(ips, len(self.ip))].sum(axis=1)
        for i, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T + bias
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return e, h

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"entity": self.entity, "ip": self.ip}
        for i, (weight, bias) in enumerate(self.layers):
            arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"] = weight, bias
        return arrays, {"algorithm": ALGORITHM, "layers": len(self.layers)}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> IPInsightsModel:
        layers = [(arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"]) for i in range(int(meta["layers"]))]
        return cls(arrays["entity"], arrays["ip"], layers)
