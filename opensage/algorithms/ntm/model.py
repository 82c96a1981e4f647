"""The NTM encoder served in numpy: topic weights = softmax(mean of the encoder's Gaussian)."""

from __future__ import annotations

from typing import Any

import numpy as np

ALGORITHM = "ntm"


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    return 1.0 / (1.0 + np.exp(-x))


class NTMModel:
    """``layers``: (weight, bias, bn_scale, bn_shift) per encoder layer (batch norm folded, eval mode);
    ``mean``: (weight, bias) of the Gaussian mean; ``decoder``: (W (K, V), b (V,))."""

    def __init__(self, layers: list[tuple[np.ndarray, ...]], mean: tuple[np.ndarray, np.ndarray],
                 decoder: tuple[np.ndarray, np.ndarray], activation: str) -> None:
        self.layers, self.mean, self.decoder, self.activation = layers, mean, decoder, activation

    @property
    def feature_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def topic_weights(self, counts: Any) -> np.ndarray:
        h = np.asarray(counts.toarray() if hasattr(counts, "toarray") else counts, dtype=np.float64)
        for weight, bias, scale, shift in self.layers:
            h = _activation(self.activation, (h @ weight.T + bias) * scale + shift)
        mu = h @ self.mean[0].T + self.mean[1]
        mu = np.exp(mu - mu.max(axis=1, keepdims=True))
        return mu / mu.sum(axis=1, keepdims=True)

    def topic_word(self) -> np.ndarray:
        logits = self.decoder[0] + self.decoder[1][None, :]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {"mean_weight": self.mean[0], "mean_bias": self.mean[1],
                                         "decoder_weight": self.decoder[0], "decoder_bias": self.decoder[1]}
        for i, parts in enumerate(self.layers):
            for name, value in zip(("weight", "bias", "scale", "shift"), parts, strict=True):
                arrays[f"layer{i}_{name}"] = value
        return arrays, {"algorithm": ALGORITHM, "layers": len(self.layers), "activation": self.activation,
                        "feature_dim": self.feature_dim, "num_topics": int(self.mean[0].shape[0])}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> NTMModel:
        layers = [tuple(arrays[f"layer{i}_{n}"] for n in ("weight", "bias", "scale", "shift"))
                  for i in range(int(meta["layers"]))]
        return cls(layers, (arrays["mean_weight"], arrays["mean_bias"]),
                   (arrays["decoder_weight"], arrays["decoder_bias"]), meta["activation"])
