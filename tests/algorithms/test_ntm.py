"""Built-in NTM: train (process) with validation / test / auxiliary vocab -> total_loss metrics -> served
topic_weights; quality vs scikit-learn's LatentDirichletAllocation on a corpus with known topics."""

import json
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest

from tests.algorithms.firstparty_support import (
    handler,
    invoke,
    ml_root,
    quality_metrics,
    recordio_bytes,
    run_training,
    sdk_records,
)
from tests.algorithms.test_lda import _corpus, _match

HP = {"feature_dim": 100, "num_topics": 5, "epochs": 50, "optimizer": "adam", "learning_rate": 0.01,
      "mini_batch_size": 64}


def test_train_process_topics_match_sklearn_lda_then_serve_topic_weights(tmp_path):
    from sklearn.decomposition import LatentDirichletAllocation

    X, topics, theta = _corpus(docs=2000)
    root = ml_root(tmp_path, HP, {"train": (X[:1600], None), "validation": (X[1600:1800], None),
                                  "test": (X[1800:], None), "auxiliary": b""})
    (root / "input" / "data" / "auxiliary" / "part-0").unlink()
    (root / "input" / "data" / "auxiliary" / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(100)))
    result = run_training("ntm", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = quality_metrics(result.stdout)
    assert {"validation:total_loss", "test:total_loss", "train:total_loss"} <= set(metrics)
    assert "epoch=0, validation total_loss <loss>=" in result.stdout and "Topic 0: w" in result.stdout

    from opensage.algorithms.ntm.serve import load

    reference = LatentDirichletAllocation(5, doc_topic_prior=0.2, random_state=0).fit(X[:1600])
    ours, order = _match(topics, load(root / "model").topic_word())
    assert ours >= _match(topics, reference.components_)[0] - 0.01
    h = handler("ntm", root / "model")
    records = sdk_records(invoke(h, recordio_bytes(X[1800:]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    weights = np.array([list(r.label["topic_weights"].float32_tensor.values) for r in records])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(weights[:, order].argmax(axis=1) == theta[1800:].argmax(axis=1)) >= 0.85
    as_json = json.loads(invoke(h, b"\n".join(b",".join(b"%d" % v for v in row) for row in X[1800:1802]),
                                "text/csv", "application/json").body)
    np.testing.assert_allclose([p["topic_weights"] for p in as_json["predictions"]], weights[:2], atol=1e-6)


def test_train_early_stopping_and_batch_norm_model_serves(tmp_path):
    """num_patience_epochs=1 with a tight tolerance stops before 100 epochs; batch norm is folded for serving."""
    X, _, _ = _corpus(docs=400)
    root = ml_root(tmp_path, {**HP, "epochs": 100, "num_patience_epochs": 1, "tolerance": 0.1, "batch_norm": True,
                              "encoder_layers": "[20, 10]", "encoder_layers_activation": "relu"},
                   {"train": (X[:300], None), "validation": (X[300:], None)})
    result = run_training("ntm", root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Early stopping after epoch" in result.stdout and "epoch=99," not in result.stdout
    response = invoke(handler("ntm", root / "model"), recordio_bytes(X[:3]), "application/x-recordio-protobuf",
                      "application/json")
    assert response.status == 200 and len(json.loads(response.body)["predictions"][0]["topic_weights"]) == 5


@pytest.mark.parametrize(("extra", "channels", "named"), [
    ({"encoder_layers": "10,abc"}, {}, "encoder_layers"),
    ({"optimizer": "lbfgs"}, {}, "optimizer"),
    ({}, {"auxiliary": b"w1\nw2\n"}, "vocab.txt"),
])
def test_train_bad_input_fails_naming_it(tmp_path, extra, channels, named):
    X, _, _ = _corpus(docs=50)
    root = ml_root(tmp_path, {**HP, **extra}, {"train": (X, None), **channels})
    assert run_training("ntm", root).returncode == 1
    assert named in (root / "output" / "failure").read_text()
