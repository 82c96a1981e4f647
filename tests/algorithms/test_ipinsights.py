"""Built-in IP Insights: CSV (entity, IPv4) training -> validation:discriminator_auc -> served dot products that
rank an entity's own (unseen) addresses above other entities' and random ones."""

import json
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest

from tests.algorithms.firstparty_support import handler, invoke, ml_root, quality_metrics, run_training

HP = {"num_entity_vectors": 400, "vector_dim": 32, "epochs": 5, "mini_batch_size": 500, "learning_rate": 0.01}


def _logins(n, users=200, seed=0, last_octets=range(0, 200)):
    """Each user logs in from two home /24 subnets; the last octet varies (held-out octets make unseen IPs)."""
    rng = np.random.default_rng(0)
    subnets = rng.integers(1 << 16, 1 << 24, size=(users, 2))
    rng = np.random.default_rng(seed)
    who = rng.integers(0, users, n)
    ips = (subnets[who, rng.integers(0, 2, n)] << 8) + rng.choice(np.array(list(last_octets)), n)
    return [f"user{u}" for u in who], [".".join(str((int(ip) >> s) & 255) for s in (24, 16, 8, 0)) for ip in ips]


def _csv(entities, ips):
    return "".join(f"{e},{ip}\n" for e, ip in zip(entities, ips, strict=True)).encode()


def test_train_process_validation_auc_then_serve_ranks_own_addresses_first(tmp_path):
    train_rows = _logins(20000)
    validation_rows = _logins(2000, seed=1, last_octets=range(200, 256))  # addresses never seen in training
    root = ml_root(tmp_path, HP, {"train": _csv(*train_rows), "validation": _csv(*validation_rows)},
                   {"train": {"ContentType": "text/csv"}, "validation": {"ContentType": "text/csv"}})
    result = run_training("ipinsights", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert quality_metrics(result.stdout)["validation:discriminator_auc"] > 0.95
    assert "epoch=4, train binary_classification_cross_entropy <loss>=" in result.stdout

    h = handler("ipinsights", root / "model")
    entities, own = validation_rows[0][:300], validation_rows[1][:300]
    others = validation_rows[1][300:600]  # mostly other users' subnets
    own_score = [p["dot_product"] for p in json.loads(invoke(h, _csv(entities, own), "text/csv",
                                                             "application/json").body)["predictions"]]
    other_score = [p["dot_product"] for p in json.loads(invoke(h, _csv(entities, others), "text/csv",
                                                               "application/json").body)["predictions"]]
    same_user = np.array([a == b for a, b in zip(entities, validation_rows[0][300:600], strict=True)])
    assert np.mean((np.array(own_score) > np.array(other_score))[~same_user]) > 0.9
    body = json.dumps({"instances": [{"data": {"features": {"values": [entities[0], own[0]]}}},
                                     {"features": [entities[1], own[1]]}]}).encode()
    verbose = json.loads(invoke(h, body, "application/json", "application/json; verbose=true").body)["predictions"]
    assert set(verbose[0]) == {"dot_product", "entity_embedding", "ip_embedding"}
    assert len(verbose[0]["entity_embedding"]) == 32
    assert verbose[0]["dot_product"] == pytest.approx(own_score[0], rel=1e-5)
    assert verbose[1]["dot_product"] == pytest.approx(
        float(np.dot(verbose[1]["entity_embedding"], verbose[1]["ip_embedding"])), rel=1e-4)
    lines = invoke(h, _csv(entities[:2], own[:2]), "text/csv", "application/jsonlines").body.decode().splitlines()
    assert [json.loads(line)["dot_product"] for line in lines] == pytest.approx(own_score[:2], rel=1e-6)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from tests.algorithms.firstparty_support import train_in_process

    root = ml_root(tmp_path_factory.mktemp("ipi"), {**HP, "epochs": 1}, {"train": _csv(*_logins(500))},
                   {"train": {"ContentType": "text/csv"}})
    train_in_process("ipinsights", root)
    return handler("ipinsights", root / "model")


@pytest.mark.parametrize(("body", "content_type", "accept", "status"), [
    (b"user1,not-an-ip\n", "text/csv", "application/json", 400),
    (b"user1\n", "text/csv", "application/json", 400),
    (b'{"instances": [{"features": [1, 2, 3]}]}', "application/json", "application/json", 400),
    (b"", "text/csv", "application/json", 400),
    (b"user1,1.2.3.4\n", "application/x-recordio-protobuf", "application/json", 415),
    (b"user1,1.2.3.4\n", "text/csv", "text/csv", 406),
])
def test_serve_bad_request_answers_4xx(small_model, body, content_type, accept, status):
    response = invoke(small_model, body, content_type, accept)
    assert response.status == status and b"Traceback" not in response.body


def test_train_missing_vector_dim_or_recordio_channel_fails_naming_it(tmp_path):
    rows = _csv(*_logins(100))
    root = ml_root(tmp_path, {"num_entity_vectors": 10}, {"train": rows}, {"train": {"ContentType": "text/csv"}})
    assert run_training("ipinsights", root).returncode == 1
    assert "'vector_dim' is a required property" in (root / "output" / "failure").read_text()
    root = ml_root(tmp_path / "b", HP, {"train": rows}, {"train": {"ContentType": "application/x-recordio-protobuf"}})
    assert run_training("ipinsights", root).returncode == 1
    assert "use text/csv" in (root / "output" / "failure").read_text()
