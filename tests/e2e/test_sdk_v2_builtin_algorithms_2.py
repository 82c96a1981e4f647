"""SDK v2 first-party estimators KNN, FactorizationMachines and RandomCutForest against `opensage up`, as AWS's
example notebooks use them: ``record_set()`` (or sparse recordIO shards under an S3 prefix, as the MovieLens
notebook writes them) -> ``fit`` -> ``deploy`` -> ``predict`` with the predictors' default recordIO-protobuf
serializer and deserializer (and JSON where the notebooks ask for it)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from tests.e2e.conftest import ROLE
from tests.e2e.test_sdk_v2_builtin_algorithms import INSTANCE, _deploy, _final_metrics

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_knn_record_set_fit_deploy_predict_verbose_neighbours(sm_session):
    import sagemaker
    from sagemaker.deserializers import JSONDeserializer
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_digits(return_X_y=True)
    X, y = X.astype("float32"), y.astype("float32")
    knn = sagemaker.KNN(role=ROLE, instance_count=1, instance_type=INSTANCE, k=5, sample_size=2000,
                        predictor_type="classifier", sagemaker_session=sm_session)
    knn.fit([knn.record_set(X[:1400], labels=y[:1400]), knn.record_set(X[1400:], labels=y[1400:], channel="test")],
            mini_batch_size=200, logs=False)
    desc, metrics = _final_metrics(sm_session, knn.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed" and desc["HyperParameters"]["feature_dim"] == "64"
    reference = KNeighborsClassifier(5).fit(X[:1400], y[:1400])
    assert metrics["test:accuracy"] >= reference.score(X[1400:], y[1400:]) - 0.01
    predictor = _deploy(knn, sm_session)
    try:
        records = predictor.predict(X[1400:1420])  # RecordSerializer -> RecordDeserializer
        labels = [r.label["predicted_label"].float32_tensor.values[0] for r in records]
        assert labels == [float(v) for v in reference.predict(X[1400:1420])]
        predictor.deserializer = JSONDeserializer()
        answer = predictor.predict(X[1400:1402], initial_args={"Accept": "application/json; verbose=true"})
        first = answer["predictions"][0]
        assert set(first) == {"predicted_label", "labels", "distances"} and len(first["labels"]) == 5
        np.testing.assert_allclose(first["distances"], reference.kneighbors(X[1400:1401])[0][0], rtol=1e-4)
    finally:
        predictor.delete_endpoint()


def _ratings(n=6000, users=60, items=80, seed=0):
    """MovieLens-like one-hot (user, item) rows; label 1 when the user's and the item's latent tastes agree."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(users, 4)), rng.normal(size=(items, 4))
    who, what = rng.integers(0, users, n), rng.integers(0, items, n)
    y = ((u[who] * v[what]).sum(1) > 0).astype("float32")
    X = sp.csr_matrix((np.ones(2 * n, "float32"), (np.repeat(np.arange(n), 2), np.ravel(np.c_[who, users + what]))),
                      shape=(n, users + items), dtype="float32")
    return X, y


def test_factorization_machines_sparse_recordio_fit_deploy_predict(sm_session):
    """The MovieLens notebook's flow: sparse shards written by ``write_spmatrix_to_sparse_tensor`` under an S3
    prefix, binary_classifier, then predictions with the default RecordSerializer and with the notebook's JSON."""
    import sagemaker
    from sagemaker.amazon.amazon_estimator import RecordSet
    from sagemaker.amazon.common import write_spmatrix_to_sparse_tensor
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer
    from sklearn.linear_model import LogisticRegression

    X, y = _ratings()
    bucket = sm_session.default_bucket()
    channels = []
    for name, rows in (("train", slice(0, 5000)), ("test", slice(5000, None))):
        buffer = io.BytesIO()
        write_spmatrix_to_sparse_tensor(buffer, X[rows], y[rows])
        key = f"e2e/fm/{name}/part-0.pbr"
        sm_session.upload_string_as_file_body(buffer.getvalue(), bucket, key)
        channels.append(RecordSet(f"s3://{bucket}/e2e/fm/{name}/", num_records=X[rows].shape[0],
                                  feature_dim=X.shape[1], s3_data_type="S3Prefix", channel=name))
    fm = sagemaker.FactorizationMachines(role=ROLE, instance_count=1, instance_type=INSTANCE, num_factors=8,
                                         predictor_type="binary_classifier", epochs=30, factors_lr=0.01,
                                         linear_lr=0.01, factors_init_sigma=0.1, sagemaker_session=sm_session)
    fm.fit(channels, mini_batch_size=200, logs=False)
    desc, metrics = _final_metrics(sm_session, fm.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed"
    linear = LogisticRegression(max_iter=1000).fit(X[:5000], y[:5000]).score(X[5000:], y[5000:])
    assert metrics["test:binary_classification_accuracy"] > linear + 0.15
    assert "test:binary_classification_cross_entropy" in metrics and "test:binary_f_beta" in metrics
    predictor = _deploy(fm, sm_session)
    try:
        dense = X[5000:5010].toarray()
        records = predictor.predict(dense)
        scores = [r.label["score"].float32_tensor.values[0] for r in records]
        labels = [r.label["predicted_label"].float32_tensor.values[0] for r in records]
        assert all(0 <= s <= 1 for s in scores) and labels == [float(s > 0.5) for s in scores]
        predictor.serializer, predictor.deserializer = JSONSerializer(), JSONDeserializer()
        answer = predictor.predict({"instances": [{"features": row.tolist()} for row in dense[:3]]})
        assert [p["predicted_label"] for p in answer["predictions"]] == [int(v) for v in labels[:3]]
    finally:
        predictor.delete_endpoint()


def test_randomcutforest_record_set_fit_deploy_predict_scores(sm_session):
    """The NYC-taxi notebook's flow on a shingled sine series with injected spikes: the spikes score highest."""
    import sagemaker

    rng = np.random.default_rng(0)
    t = np.arange(3000)
    series = 10 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.5, len(t))
    spikes = np.array([500, 1200, 2100, 2700])
    series[spikes] += 25
    shingles = np.lib.stride_tricks.sliding_window_view(series, 4).astype("float32")
    labels = np.zeros(len(shingles), "float32")
    for s in spikes:
        labels[max(0, s - 3):s + 1] = 1.0
    rcf = sagemaker.RandomCutForest(role=ROLE, instance_count=1, instance_type=INSTANCE, num_samples_per_tree=256,
                                    num_trees=50, sagemaker_session=sm_session)
    rcf.fit([rcf.record_set(shingles), rcf.record_set(shingles, labels=labels, channel="test")], logs=False)
    desc, metrics = _final_metrics(sm_session, rcf.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed" and desc["HyperParameters"]["feature_dim"] == "4"
    assert metrics["test:f1"] > 0.5 and "test:accuracy" in metrics
    predictor = _deploy(rcf, sm_session)
    try:
        records = predictor.predict(shingles)
        scores = np.array([r.label["score"].float32_tensor.values[0] for r in records])
        assert len(scores) == len(shingles) and 0.5 < np.median(scores) < 1.5
        top = set(np.argsort(scores)[-4 * len(spikes):].tolist())
        assert all(any(s - 3 <= i <= s for i in top) for s in spikes)
    finally:
        predictor.delete_endpoint()


def test_lda_record_set_fit_deploy_predict_topic_mixture(sm_session):
    """The LDA notebook's flow on a synthetic corpus with known topics: test:pwll, then topic mixtures."""
    import sagemaker

    rng = np.random.default_rng(0)
    topics = np.zeros((3, 30))
    for k in range(3):
        topics[k, k * 10:(k + 1) * 10] = rng.dirichlet(np.ones(10))
    theta = rng.dirichlet(np.full(3, 0.2), 600)
    X = np.array([rng.multinomial(80, t @ topics) for t in theta]).astype("float32")
    lda = sagemaker.LDA(role=ROLE, instance_count=1, instance_type=INSTANCE, num_topics=3, alpha0=1.0,
                        sagemaker_session=sm_session)
    lda.fit([lda.record_set(X[:500]), lda.record_set(X[500:], channel="test")], mini_batch_size=100, logs=False)
    desc, metrics = _final_metrics(sm_session, lda.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed" and metrics["test:pwll"] < 0
    predictor = _deploy(lda, sm_session)
    try:
        records = predictor.predict(X[500:520])
        mixtures = np.array([list(r.label["topic_mixture"].float32_tensor.values) for r in records])
        assert mixtures.shape == (20, 3) and np.allclose(mixtures.sum(axis=1), 1.0, atol=1e-5)
        dominant_true, dominant_served = theta[500:520].argmax(axis=1), mixtures.argmax(axis=1)
        agree = max(np.mean(np.array([perm[d] for d in dominant_served]) == dominant_true)
                    for perm in itertools.permutations(range(3)))
        assert agree >= 0.85
    finally:
        predictor.delete_endpoint()


def test_ipinsights_csv_fit_deploy_predict_dot_products(sm_session):
    """The IP Insights notebook's flow: (user, IPv4) CSV under an S3 prefix, train + validation, then the
    predictor's default CSV serializer / JSON deserializer; a user's own new addresses outscore random ones."""
    import sagemaker
    from sagemaker.amazon.amazon_estimator import RecordSet

    rng = np.random.default_rng(0)
    subnets = rng.integers(1 << 16, 1 << 24, size=(100, 2))

    def logins(n, octets):
        who = rng.integers(0, 100, n)
        ips = (subnets[who, rng.integers(0, 2, n)] << 8) + rng.choice(octets, n)
        return [(f"user{u}", ".".join(str((int(ip) >> s) & 255) for s in (24, 16, 8, 0)))
                for u, ip in zip(who, ips, strict=True)]

    bucket = sm_session.default_bucket()
    channels = []
    for name, rows in (("train", logins(10000, np.arange(200))), ("validation", logins(1000, np.arange(200, 256)))):
        sm_session.upload_string_as_file_body("".join(f"{u},{ip}\n" for u, ip in rows), bucket,
                                              f"e2e/ipinsights/{name}/part-0.csv")
        channels.append(RecordSet(f"s3://{bucket}/e2e/ipinsights/{name}/", num_records=len(rows), feature_dim=2,
                                  s3_data_type="S3Prefix", channel=name))
        if name == "validation":
            held_out = rows
    ipi = sagemaker.IPInsights(role=ROLE, instance_count=1, instance_type=INSTANCE, num_entity_vectors=200,
                               vector_dim=32, epochs=5, learning_rate=0.01, sagemaker_session=sm_session)
    ipi.fit(channels, mini_batch_size=500, logs=False)
    desc, metrics = _final_metrics(sm_session, ipi.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed" and metrics["validation:discriminator_auc"] > 0.9
    predictor = _deploy(ipi, sm_session)
    try:
        own = predictor.predict(held_out[:20])  # CSVSerializer -> JSONDeserializer
        random_ips = [(u, f"{rng.integers(1, 224)}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.7")
                      for u, _ in held_out[:20]]
        other = predictor.predict(random_ips)
        own_scores = [p["dot_product"] for p in own["predictions"]]
        other_scores = [p["dot_product"] for p in other["predictions"]]
        assert np.mean(np.array(own_scores) > np.array(other_scores)) >= 0.9
    finally:
        predictor.delete_endpoint()


def test_ntm_record_set_fit_deploy_predict_topic_weights(sm_session):
    """The NTM notebook's flow: train + validation record sets, validation:total_loss, topic weights."""
    import sagemaker

    rng = np.random.default_rng(1)
    topics = np.zeros((3, 30))
    for k in range(3):
        topics[k, k * 10:(k + 1) * 10] = rng.dirichlet(np.ones(10))
    theta = rng.dirichlet(np.full(3, 0.2), 1000)
    X = np.array([rng.multinomial(80, t @ topics) for t in theta]).astype("float32")
    ntm = sagemaker.NTM(role=ROLE, instance_count=1, instance_type=INSTANCE, num_topics=3, optimizer="adam",
                        learning_rate=0.01, epochs=40, sagemaker_session=sm_session)
    ntm.fit([ntm.record_set(X[:800]), ntm.record_set(X[800:900], channel="validation")], mini_batch_size=64,
            logs=False)
    desc, metrics = _final_metrics(sm_session, ntm.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed" and metrics["validation:total_loss"] > 0
    predictor = _deploy(ntm, sm_session)
    try:
        records = predictor.predict(X[900:940])
        weights = np.array([list(r.label["topic_weights"].float32_tensor.values) for r in records])
        assert weights.shape == (40, 3) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        agree = max(np.mean(np.array([perm[d] for d in weights.argmax(axis=1)]) == theta[900:940].argmax(axis=1))
                    for perm in itertools.permutations(range(3)))
        assert agree >= 0.85
    finally:
        predictor.delete_endpoint()
