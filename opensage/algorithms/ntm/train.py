"""NTM training: ``python -m opensage.algorithms.ntm.train``.

Channels: ``train`` (required), ``validation`` and ``test`` (word counts, recordio-protobuf dense or sparse, or
``text/csv``) and ``auxiliary`` (``vocab.txt``, text/plain, one word per line for feature_dim words). Metrics:
``train``/``validation`` ``total_loss`` per epoch (``epoch=``) and final, ``test total_loss``; training stops
when the validation loss (train loss without a validation channel) has not improved by ``tolerance``
(relative) for ``num_patience_epochs`` epochs, and keeps the best epoch's weights. ``sub_sample`` trains each
epoch on that fraction of the training documents.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from opensage.algorithms import firstparty
from opensage.algorithms.firstparty import JobInput, UserError, quality_metric
from opensage.algorithms.ntm import hyperparameters
from opensage.algorithms.ntm.model import ALGORITHM, NTMModel

CHANNELS = ("train", "validation", "test", "auxiliary")
DATA_CHANNELS = ("train", "validation", "test")

log = logging.getLogger("opensage.algorithms")


def _network(torch: Any, hp: dict[str, Any]) -> Any:
    nn = torch.nn
    activation = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[hp["encoder_layers_activation"]]

    class VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            sizes = [hp["feature_dim"], *hp["encoder_layers"]]
            self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
            self.norms = nn.ModuleList((nn.BatchNorm1d(b) if hp["batch_norm"] else nn.Identity()) for b in sizes[1:])
            self.act = activation()
            self.mean = nn.Linear(sizes[-1], hp["num_topics"])
            self.logvar = nn.Linear(sizes[-1], hp["num_topics"])
            self.decoder = nn.Linear(hp["num_topics"], hp["feature_dim"])

        def forward(self, x: Any) -> tuple[Any, Any]:
            h = x
            for linear, norm in zip(self.linears, self.norms, strict=True):
                h = self.act(norm(linear(h)))
            mu, logvar = self.mean(h), self.logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            log_words = torch.log_softmax(self.decoder(torch.softmax(z, dim=1)), dim=1)
            reconstruction = -(x * log_words).sum(dim=1)
            kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(dim=1)
            return reconstruction, kl

    return VAE()


def _optimizer(torch: Any, params: Any, hp: dict[str, Any]) -> Any:
    name, lr, wd = hp["optimizer"], hp["learning_rate"], hp["weight_decay"]
    if name == "adadelta":  # MXNet's AdaDelta has no learning rate (torch's lr=1.0 is the same update)
        return torch.optim.Adadelta(params, lr=1.0, weight_decay=wd)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad,
           "rmsprop": torch.optim.RMSprop}[name]
    return cls(params, lr=lr, weight_decay=wd)


def _tensor(torch: Any, X: Any) -> Any:
    return torch.from_numpy(np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32))


def mean_loss(torch: Any, net: Any, X: Any, batch: int = 4096) -> float:
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, X.shape[0], batch):
            reconstruction, kl = net(_tensor(torch, X[start:start + batch]))
            total += float((reconstruction + kl).sum())
    return total / max(X.shape[0], 1)


def fit(X: Any, hp: dict[str, Any], validation: Any = None, host: str = "algo-1", seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # small dense batches: intra-op threads cost more than they save on shared cores
    rng = np.random.default_rng(seed)
    net = _network(torch, hp)
    optimizer = _optimizer(torch, net.parameters(), hp)
    best, best_state, waited = np.inf, copy.deepcopy(net.state_dict()), 0
    for epoch in range(hp["epochs"]):
        net.train()
        rows = rng.permutation(X.shape[0])[:max(1, int(round(hp["sub_sample"] * X.shape[0])))]
        total = 0.0
        for start in range(0, len(rows), hp["mini_batch_size"]):
            batch = rows[start:start + hp["mini_batch_size"]]
            if hp["batch_norm"] and len(batch) < 2:
                continue
            reconstruction, kl = net(_tensor(torch, X[batch]))
            loss = (reconstruction + kl).mean()
            optimizer.zero_grad()
            loss.backward()
            for p in net.parameters():
                if p.grad is not None:
                    p.grad.mul_(hp["rescale_gradient"])
                    if hp["clip_gradient"] is not None:
                        p.grad.clamp_(-hp["clip_gradient"], hp["clip_gradient"])
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        quality_metric(host, "train", "total_loss", total / len(rows), kind="loss", epoch=epoch)
        watched = total / len(rows)
        if validation is not None:
            watched = mean_loss(torch, net, validation)
            quality_metric(host, "validation", "total_loss", watched, kind="loss", epoch=epoch)
        if watched < best - hp["tolerance"] * abs(best if np.isfinite(best) else watched):
            best, best_state, waited = watched, copy.deepcopy(net.state_dict()), 0
        else:
            waited += 1
            if waited >= hp["num_patience_epochs"]:
                log.info("Early stopping after epoch %d: no improvement for %d epochs", epoch, waited)
                break
    net.load_state_dict(best_state)
    net.eval()
    return net


def export(net: Any, hp: dict[str, Any]) -> NTMModel:
    def arr(t: Any) -> np.ndarray:
        return t.detach().numpy().astype(np.float64)

    layers = []
    for linear, norm in zip(net.linears, net.norms, strict=True):
        if hp["batch_norm"]:  # eval-mode batch norm: y * scale + shift
            scale = arr(norm.weight) / np.sqrt(arr(norm.running_var) + norm.eps)
            shift = arr(norm.bias) - arr(norm.running_mean) * scale
        else:
            scale, shift = np.ones(linear.out_features), np.zeros(linear.out_features)
        layers.append((arr(linear.weight), arr(linear.bias), scale, shift))
    return NTMModel(layers, (arr(net.mean.weight), arr(net.mean.bias)),
                    (arr(net.decoder.weight).T.copy(), arr(net.decoder.bias)), hp["encoder_layers_activation"])


def read_vocabulary(job: JobInput, feature_dim: int) -> list[str] | None:
    if "auxiliary" not in job.data_config:
        return None
    path = job.paths.data / "auxiliary" / "vocab.txt"
    if not path.is_file():
        raise UserError("ClientError: channel 'auxiliary' must hold vocab.txt (one word per line).")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(words) != feature_dim:
        raise UserError(f"ClientError: vocab.txt in channel 'auxiliary' has {len(words)} words but feature_dim is "
                        f"{feature_dim}.")
    return words


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    job.check_channels(CHANNELS)
    vocabulary = read_vocabulary(job, hp["feature_dim"])
    data_config = {k: v for k, v in job.data_config.items() if k != "auxiliary"}
    data = JobInput(job.paths, job.raw_hyperparameters, data_config, job.host).read_channels(
        DATA_CHANNELS, hp["feature_dim"], supervised=False)
    for name, found in data.items():
        values = found.features.data if found.is_sparse else found.features
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise UserError(f"ClientError: channel '{name}' must hold non-negative word counts.")
    validation = data["validation"].features if "validation" in data else None
    net = fit(data["train"].features, hp, validation, job.host)
    import torch

    for name in DATA_CHANNELS:
        if name in data:
            quality_metric(job.host, name, "total_loss", mean_loss(torch, net, data[name].features), kind="loss")
    model = export(net, hp)
    if vocabulary:
        for k, row in enumerate(model.topic_word()):
            log.info("Topic %d: %s", k, " ".join(vocabulary[i] for i in np.argsort(row)[::-1][:10]))
    arrays, meta = model.state()
    return firstparty.save_state(job.paths.model, arrays, meta)


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
