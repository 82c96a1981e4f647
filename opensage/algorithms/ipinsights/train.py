"""IP Insights training: ``python -m opensage.algorithms.ipinsights.train``.

Channels: ``train`` (required) and ``validation``, ``text/csv`` rows ``entity_id, ipv4_address`` (no header;
File or Pipe mode). Rows whose address is not IPv4 are skipped and counted in the log. Metrics:
``train binary_classification_cross_entropy`` every ``batch_metrics_publish_interval`` batches and per epoch,
``validation discriminator_auc`` (the validation pairs against as many generated negatives).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import content, firstparty
from opensage.algorithms.firstparty import JobInput, UserError, quality_metric
from opensage.algorithms.ipinsights import hyperparameters
from opensage.algorithms.ipinsights.model import (
    ALGORITHM,
    IPInsightsModel,
    entity_buckets,
    ip_integers,
    parse_pairs,
    prefix_buckets,
)

CHANNELS = ("train", "validation")

log = logging.getLogger("opensage.algorithms")


def read_pairs(job: JobInput, channel: str) -> tuple[list[str], np.ndarray]:
    config = job.data_config[channel]
    kind = (config.get("ContentType") or "text/csv").split(";")[0].strip().lower()
    if kind != "text/csv":
        raise UserError(f"ClientError: Channel '{channel}': content type {config.get('ContentType')!r} is not "
                        f"supported by this algorithm; use text/csv (entity_id, ipv4_address rows).")
    entities: list[str] = []
    ips: list[str] = []
    for source in content.channel_sources(channel, job.paths.data, input_mode=config.get("TrainingInputMode") or
                                          "File", record_wrapper=config.get("RecordWrapperType")):
        try:
            found = parse_pairs(source.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"ClientError: channel '{channel}', file {source.name}: {exc}") from None
        entities.extend(found[0])
        ips.extend(found[1])
    values, bad = ip_integers(ips)
    if bad:
        log.warning("Channel '%s': skipped %d rows whose address is not IPv4 (first: %r)", channel, len(bad),
                    ips[bad[0]])
        keep = np.setdiff1d(np.arange(len(ips)), bad)
        entities, values = [entities[i] for i in keep], values[keep]
    if not entities:
        raise UserError(f"ClientError: channel '{channel}' has no (entity_id, ipv4_address) rows.")
    return entities, values


class _Network:
    """The torch module: hashed entity table, hashed IP-prefix table, IP encoder layers."""

    def __init__(self, torch: Any, hp: dict[str, Any]) -> None:
        nn = torch.nn
        dim, buckets = hp["vector_dim"], hp["num_entity_vectors"]
        self.torch = torch
        self.entity = nn.Embedding(buckets, dim)
        self.ip = nn.EmbeddingBag(buckets, dim, mode="sum")
        for table in (self.entity, self.ip):
            nn.init.normal_(table.weight, std=1.0 / np.sqrt(dim))
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(hp["num_ip_encoder_layers"]))
        self.modules = nn.ModuleList([self.entity, self.ip, self.layers])

    def logits(self, entity_ids: Any, ip_prefixes: Any) -> Any:
        h = self.ip(ip_prefixes)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.torch.relu(h)
        return (self.entity(entity_ids) * h).sum(dim=1)

    def export(self) -> IPInsightsModel:
        def arr(t: Any) -> np.ndarray:
            return t.detach().numpy().astype(np.float32)

        return IPInsightsModel(arr(self.entity.weight), arr(self.ip.weight),
                               [(arr(layer.weight), arr(layer.bias)) for layer in self.layers])


def negatives(entity_ids: np.ndarray, ips: np.ndarray, hp: dict[str, Any], rng: np.random.Generator,
              ) -> tuple[np.ndarray, np.ndarray]:
    """(entity ids, IPs) of the negative pairs for a batch: random addresses, and the batch's IPs shuffled."""
    ents, addrs = [], []
    for _ in range(hp["random_negative_sampling_rate"]):
        ents.append(entity_ids)
        addrs.append(rng.integers(0, 2 ** 32, size=len(ips), dtype=np.int64))
    for _ in range(hp["shuffled_negative_sampling_rate"]):
        ents.append(entity_ids)
        addrs.append(ips[rng.permutation(len(ips))])
    if not ents:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ents), np.concatenate(addrs)


def fit(entities: list[str], ips: np.ndarray, hp: dict[str, Any], host: str = "algo-1", seed: int = 0) -> Any:
    import torch

    # Mini-batches here are small: torch's intra-op threads cost more than they save (measured ~10x slower
    # with the default thread count on 2 busy cores).
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    buckets = hp["num_entity_vectors"]
    net = _Network(torch, hp)
    optimizer = torch.optim.Adam(net.modules.parameters(), lr=hp["learning_rate"], weight_decay=hp["weight_decay"])
    entity_ids = entity_buckets(entities, buckets)
    size, batch = hp["mini_batch_size"], 0
    for epoch in range(hp["epochs"]):
        order = rng.permutation(len(ips))
        total, count = 0.0, 0
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            neg_e, neg_ip = negatives(entity_ids[rows], ips[rows], hp, rng)
            all_e = np.concatenate([entity_ids[rows], neg_e])
            all_ip = np.concatenate([ips[rows], neg_ip])
            target = torch.from_numpy(np.r_[np.ones(len(rows)), np.zeros(len(neg_e))].astype(np.float32))
            logits = net.logits(torch.from_numpy(all_e), torch.from_numpy(prefix_buckets(all_ip, buckets)))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch += 1
            total, count = total + float(loss.detach()) * len(target), count + len(target)
            if batch % hp["batch_metrics_publish_interval"] == 0:
                log.info("#quality_metric: host=%s, epoch=%d, batch=%d train binary_classification_cross_entropy "
                         "<loss>=%r", host, epoch, batch, total / count)
        quality_metric(host, "train", "binary_classification_cross_entropy", total / max(count, 1), kind="loss",
                       epoch=epoch)
    return net.export()


def discriminator_auc(model: IPInsightsModel, entities: list[str], ips: np.ndarray, hp: dict[str, Any],
                      seed: int = 1) -> float:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    rows = np.arange(len(ips))
    neg_rows = rng.choice(rows, size=len(rows))
    random_half = rng.random(len(rows)) < 0.5
    neg_ips = np.where(random_half, rng.integers(0, 2 ** 32, size=len(rows), dtype=np.int64),
                       ips[rng.permutation(len(rows))])
    pos = np.einsum("ij,ij->i", *model.embed(entities, ips))
    neg = np.einsum("ij,ij->i", *model.embed([entities[i] for i in neg_rows], neg_ips[neg_rows]))
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    job.check_channels(CHANNELS)
    entities, ips = read_pairs(job, "train")
    log.info("Training on %d (entity, IP) pairs, %d distinct entities", len(ips), len(set(entities)))
    model = fit(entities, ips, hp, host=job.host)
    if "validation" in job.data_config:
        v_entities, v_ips = read_pairs(job, "validation")
        quality_metric(job.host, "validation", "discriminator_auc", discriminator_auc(model, v_entities, v_ips, hp))
    arrays, meta = model.state()
    return firstparty.save_state(job.paths.model, arrays, meta)


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
