"""The nine first-party built-ins as platform jobs vs their reference library, on the same data and cores.

For each algorithm, ``--repeats`` rounds of (reference, job, direct), the order rotating each round, nothing else
of ours running (each timed run waits for a quiet machine first: ``settle``):

* ``reference``: this process, its libraries imported beforehand, data already in memory as numpy/scipy:
  the reference's ``fit`` plus the evaluation the job also does on its test/validation channel (the job
  prints that metric, so it is part of its training time too). Wall seconds and CPU seconds
  (``time.process_time``: every thread of this process).
* ``direct``: ``python -m opensage.algorithms.<m>.train`` on a local /opt/ml tree holding the same files: the
  job's algorithm process without the platform (no agent, download or upload), timed from outside.
* ``job``: CreateTrainingJob on ``opensage up`` (``--platform up``, default: SeaweedFS S3) or on the in-process
  control plane (``--platform inproc``: tests/conftest.py ``start_server``, file:// store; the data uploaded once beforehand, recordIO-
  protobuf as ``record_set()`` writes it, or CSV where the algorithm takes CSV) -> Completed seen by
  DescribeTrainingJob (50 ms polls): wall time (platform overhead included), and from the agent's own files
  the breakdown: agent start (TrainingStartTime -> Downloading), channel download (Downloading -> Training),
  the algorithm process (Training -> Uploading), the model upload (Uploading -> result.json) and result -> Completed seen; CPU seconds of the job's
  processes (agent + algorithm, from the agent's /proc entry) and of the control plane.

References (quality metric beside each time, same metric on both sides):

* linear-learner (binary): StandardScaler + LogisticRegression (lbfgs), test accuracy. The job with SageMaker's
  defaults (8 parallel models, selection with threshold calibration: more work than one fit), and as
  ``linear-learner:one-model`` with the reference's problem (one model, wd = 1 / (C n), threshold 0.5).
* kmeans: KMeans (k-means++, n_init 1), test mean squared distance to the closest centre.
* pca: PCA (svd_solver auto: covariance_eigh for tall data in scikit-learn 1.9), fraction of the training variance the components keep (job: from its model artifact).
* knn: KNeighborsClassifier (fit + predicting the test set), test accuracy.
* factorization-machines: no scikit-learn FM exists, so the same training code (``...factorization_machines.
  train.train``) called in this process on the same files, torch imported beforehand: platform overhead only.
* randomcutforest: IsolationForest (100 trees, 256 samples per tree as RCF's defaults), test F1, both flagging
  scores above mean + 3 sd of their training scores (RCF's own threshold rule).
* lda: LatentDirichletAllocation (batch variational Bayes), test per-word log-likelihood.
* ntm: LatentDirichletAllocation, topic recovery (mean cosine of the known topics to the learned ones, best
  matching; job: from its model artifact).
* ipinsights: like FM, the same training code in this process; validation AUC.

``--zygotes compare`` (default) times the job on two platforms open at once: one with zygotes off
(``OPENSAGE_ZYGOTES=0``: a fresh algorithm process per job, the path before runner/zygote.py) and one with them on
(its zygote warmed by untimed jobs first), rounds interleaved with the reference and the direct process.

Data sets are the tests' generators (tests/algorithms), sized so that all of it runs in a few minutes on 2
cores. Each report prints the load average before and after.

    .venv/bin/python benchmarks/bench_builtin_algorithms.py --repeats 3 [--only kmeans,pca]

At realistic size (references of several seconds; RESULTS.md "Realistic size"): ``--scale-of kmeans=100,knn=6``
multiplies those data sets' rows, ``--pca-features`` widens pca, ``--small-warmup`` runs the untimed zygote
warm-up jobs on the default-size twin, ``--no-direct`` skips the platform-less process; the channels are written
by ``dense_recordio`` (the SDK's bytes, built vectorised).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_start as common  # noqa: E402  (platform + job helpers)
import bench_xgboost_builtin as xgbbench  # noqa: E402  (events, report cells)

if str(common.REPO) not in sys.path:
    sys.path.insert(0, str(common.REPO))

IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/{}:1"
PREFIX = "builtin-bench"
RECORDIO = "application/x-recordio-protobuf"
# --describe-poll-only: wait for a job by DescribeTrainingJob every 50 ms alone (the tables before 2026-11-27
# 08:15); default: a stat of the agent's result.json every 10 ms first (common.wait_finished)
DESCRIBE_POLL_ONLY = False


@dataclass
class Case:
    """One algorithm: its job (image, hyperparameters, channels) and its reference."""

    name: str  # image repository
    module: str  # opensage.algorithms.<module>
    reference_name: str
    metric: str  # what the quality number is
    hyperparameters: dict[str, Any]
    channels: dict[str, tuple[str, Any]]  # channel -> (ContentType, (features, labels) or CSV bytes)
    reference: Callable[[], float]  # fits and evaluates; returns the quality metric
    job_metric: Callable[[dict[str, float], Path | None], float]  # (#quality_metric values, model dir)
    needs_model: bool = False
    data: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    variant: str = ""  # a second case of one image (other hyperparameters): its row is "<name> (<variant>)"

    @property
    def key(self) -> str:
        """What ``--only`` and the result rows call it: the image, or ``<image>:<variant>``."""
        return f"{self.name}:{self.variant}" if self.variant else self.name


# ----------------------------------------------------------------------------------------- cases


def _tempdir() -> Path:
    """A scratch directory removed when the benchmark exits."""
    path = Path(tempfile.mkdtemp(prefix="opensage-bench-1p-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _split(X: Any, y: Any, n_test: int) -> tuple[Any, Any, Any, Any]:
    return X[:-n_test], (None if y is None else y[:-n_test]), X[-n_test:], (None if y is None else y[-n_test:])


def _in_process(module: str, hyperparameters: dict[str, Any], channels: dict[str, tuple[str, Any]],
                metric: str) -> Callable[[], float]:
    """The algorithm's own ``train`` in this process on an ml root written beforehand (the files are read
    inside the timing, as the job reads its downloaded files); its ``#quality_metric`` lines captured."""
    from tests.algorithms.firstparty_support import ml_root, quality_metrics, train_in_process

    tmp = _tempdir()
    root = ml_root(tmp, hyperparameters, {c: v for c, (_, v) in channels.items()},
                   {c: {"ContentType": ct} for c, (ct, _) in channels.items()})
    importlib_module = __import__(f"opensage.algorithms.{module}.train")  # imports (torch) outside the timing
    del importlib_module

    def run() -> float:
        shutil.rmtree(root / "model", ignore_errors=True)
        (root / "model").mkdir()
        lines = io.StringIO()
        handler = logging.StreamHandler(lines)
        logger = logging.getLogger("opensage.algorithms")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            train_in_process(module, root)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        text = "\n".join(f"#quality_metric: host=algo-1, {line.partition('host=algo-1, ')[2]}"
                         for line in lines.getvalue().splitlines() if "#quality_metric" in line)
        return quality_metrics(text)[metric]

    return run


def _topic_recovery(true_topics: Any, learned: Any) -> float:
    from tests.algorithms.test_lda import _match

    return _match(true_topics, learned)[0]


def cases(scale: float, only: set[str] | None = None, scales: dict[str, float] | None = None,
          pca_features: int = 50) -> list[Case]:
    """The selected cases (``only``; all when None), each data set's row count multiplied by ``scales[name]``
    where given, else by ``scale``; pca's width is ``pca_features``. Unselected data sets are not generated."""
    import numpy as np
    from sklearn.datasets import make_blobs, make_classification

    factor = scale

    def n(x: int) -> int:
        return max(200, int(x * factor))

    def want(*names: str) -> bool:
        nonlocal factor
        chosen = [name for name in names if only is None or name in only]
        # a variant's data set is its image's: it takes that --scale-of unless it has its own
        factor = next((scales[x] for x in (*chosen[:1], names[0]) if x in (scales or {})), scale) if chosen \
            else scale
        return bool(chosen)

    out: list[Case] = []

    # linear-learner: binary classifier, with SageMaker's defaults (8 parallel models, model selection with
    # threshold calibration) and, as variant "one-model", the reference's own problem: one model, L2 as
    # LogisticRegression's C=1 (wd = 1 / (C n): its objective is C * sum of losses + |w|^2 / 2), no penalty on
    # the bias, the 0.5 threshold - the same work on both sides, so the ratio measures the implementation.
    if want("linear-learner", "linear-learner:one-model"):
        X, y = make_classification(n(20000), 50, n_informative=20, random_state=0)
        X, y = X.astype(np.float32), y.astype(np.float32)
        Xtr, ytr, Xte, yte = _split(X, y, n(4000))

        def ll_ref(Xtr=Xtr, ytr=ytr, Xte=Xte, yte=yte) -> float:
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return float(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(Xtr, ytr).score(Xte, yte))

        ll_defaults = {"predictor_type": "binary_classifier", "feature_dim": 50, "mini_batch_size": 100}
        ll_one = {**ll_defaults, "num_models": 1, "wd": 1.0 / len(Xtr), "l1": 0.0, "bias_wd_mult": 0.0,
                  "binary_classifier_model_selection_criteria": "loss_function"}
        for variant, hyperparameters in (("", ll_defaults), ("one-model", ll_one)):
            out.append(Case("linear-learner", "linear_learner", "StandardScaler + LogisticRegression",
                            "test accuracy", hyperparameters,
                            {"train": (RECORDIO, (Xtr, ytr)), "test": (RECORDIO, (Xte, yte))}, ll_ref,
                            lambda m, _: m["test:binary_classification_accuracy"],
                            data=f"make_classification {len(X):,} × 50, {len(Xte):,} test", variant=variant))

    # kmeans
    if want("kmeans"):
        X, _ = make_blobs(n(20000), 20, centers=10, cluster_std=2.0, random_state=0)
        X = X.astype(np.float32)
        Xtr, _, Xte, _ = _split(X, None, n(2000))

        def km_ref(Xtr=Xtr, Xte=Xte) -> float:
            from sklearn.cluster import KMeans

            return float(-KMeans(10, n_init=1, random_state=0).fit(Xtr).score(Xte) / len(Xte))

        out.append(Case("kmeans", "kmeans", "KMeans (k-means++, n_init=1)", "test MSD (lower is better)",
                        {"k": 10, "feature_dim": 20, "mini_batch_size": 5000, "eval_metrics": '["msd"]'},
                        {"train": (RECORDIO, (Xtr, None)), "test": (RECORDIO, (Xte, None))}, km_ref,
                        lambda m, _: m["test:msd"], data=f"make_blobs {len(X):,} × 20, 10 centres, {len(Xte):,} test"))

    # pca
    if want("pca"):
        rng = np.random.default_rng(0)
        X = (rng.normal(size=(n(20000), 10)) @ rng.normal(size=(10, pca_features))
             + 0.5 * rng.normal(size=(n(20000), pca_features)))
        X = X.astype(np.float32)

        def kept_variance(projection: Any, X=X) -> float:
            return float(projection.var(axis=0).sum() / X.var(axis=0).sum())

        def pca_ref(X=X) -> float:
            from sklearn.decomposition import PCA

            return kept_variance(PCA(10).fit(X).transform(X))

        def pca_job(_: dict[str, float], model: Path | None, X=X) -> float:
            from opensage.algorithms.pca.serve import load

            assert model is not None
            return kept_variance(load(model).project(X))

        out.append(Case("pca", "pca", "PCA (default svd_solver=auto)", "variance kept by 10 components",
                        {"num_components": 10, "feature_dim": pca_features, "mini_batch_size": 1000, "algorithm_mode": "regular"},
                        {"train": (RECORDIO, (X, None))}, pca_ref, pca_job, needs_model=True,
                        data=f"rank-10 + noise {len(X):,} × {pca_features}"))

    # knn
    if want("knn"):
        X, y = make_classification(n(20000), 20, n_informative=10, n_classes=5, random_state=1)
        X, y = X.astype(np.float32), y.astype(np.float32)
        Xtr, ytr, Xte, yte = _split(X, y, n(2000))

        def knn_ref(Xtr=Xtr, ytr=ytr, Xte=Xte, yte=yte) -> float:
            from sklearn.neighbors import KNeighborsClassifier

            return float(KNeighborsClassifier(5).fit(Xtr, ytr).score(Xte, yte))

        out.append(Case("knn", "knn", "KNeighborsClassifier (k=5)", "test accuracy",
                        {"feature_dim": 20, "k": 5, "predictor_type": "classifier", "sample_size": len(Xtr)},
                        {"train": (RECORDIO, (Xtr, ytr)), "test": (RECORDIO, (Xte, yte))}, knn_ref,
                        lambda m, _: m["test:accuracy"], data=f"make_classification 5 classes {len(X):,} × 20, "
                        f"{len(Xte):,} test"))

    # factorization-machines: reference = the same training code in-process.
    if want("factorization-machines"):
        from tests.algorithms.test_factorization_machines import HP as FM_HP
        from tests.algorithms.test_factorization_machines import _ratings

        X, y = _ratings(n(12000))
        Xtr, ytr, Xte, yte = _split(X, y, n(2000))
        fm_channels = {"train": (RECORDIO, (Xtr, ytr)), "test": (RECORDIO, (Xte, yte))}
        out.append(Case("factorization-machines", "factorization_machines", "same torch code in-process",
                        "test accuracy", dict(FM_HP), fm_channels,
                        _in_process("factorization_machines", FM_HP, fm_channels, "test:binary_classification_accuracy"),
                        lambda m, _: m["test:binary_classification_accuracy"],
                        data=f"one-hot user×item (sparse) {X.shape[0]:,} × {X.shape[1]}, 30 epochs"))

    # randomcutforest
    if want("randomcutforest"):
        from tests.algorithms.test_randomcutforest import _with_anomalies

        X, y = _with_anomalies(n=n(10000), anomalies=n(100))
        Xte, yte = X[:n(2000)], y[:n(2000)]
        test_csv = "\n".join(",".join([repr(float(label))] + [repr(float(v)) for v in row])
                             for row, label in zip(Xte, yte, strict=True)).encode()

        def rcf_ref(X=X, Xte=Xte, yte=yte) -> float:
            from sklearn.ensemble import IsolationForest
            from sklearn.metrics import f1_score

            model = IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(X)
            train_scores = -model.score_samples(X)  # the same threshold rule as RCF: mean + 3 sd on training
            cutoff = train_scores.mean() + 3 * train_scores.std()
            return float(f1_score(yte == 1, -model.score_samples(Xte) > cutoff))

        out.append(Case("randomcutforest", "randomcutforest", "IsolationForest (100 trees × 256)", "test F1",
                        {"feature_dim": 5, "num_trees": 100, "num_samples_per_tree": 256},
                        {"train": (RECORDIO, (X, None)), "test": ("text/csv;label_size=1", test_csv)}, rcf_ref,
                        lambda m, _: m["test:f1"], data=f"2 Gaussian clusters + 1% uniform anomalies {len(X):,} × 5, "
                        f"{len(Xte):,} labelled test"))

    # lda + ntm: synthetic corpus with 5 known topics on 100 words.
    if want("lda", "ntm"):
        from tests.algorithms.test_lda import _corpus

        X, topics, _ = _corpus(docs=n(2000))
        Xtr, _, Xte, _ = _split(X, None, n(400))

        def lda_ref(Xtr=Xtr, Xte=Xte) -> float:
            from sklearn.decomposition import LatentDirichletAllocation

            model = LatentDirichletAllocation(5, doc_topic_prior=0.2, random_state=0).fit(Xtr)
            return float(model.score(Xte) / Xte.sum())

        out.append(Case("lda", "lda", "LatentDirichletAllocation (batch VB)", "test per-word log-likelihood",
                        {"num_topics": 5, "feature_dim": 100, "mini_batch_size": 100},
                        {"train": (RECORDIO, (Xtr, None)), "test": (RECORDIO, (Xte, None))}, lda_ref,
                        lambda m, _: m["test:pwll"], data=f"5 known topics, {len(X):,} docs × 100 words"))

        from tests.algorithms.test_ntm import HP as NTM_HP

        def ntm_ref(Xtr=Xtr, topics=topics) -> float:
            from sklearn.decomposition import LatentDirichletAllocation

            return _topic_recovery(topics, LatentDirichletAllocation(5, doc_topic_prior=0.2, random_state=0)
                                   .fit(Xtr).components_)

        def ntm_job(_: dict[str, float], model: Path | None, topics=topics) -> float:
            from opensage.algorithms.ntm.serve import load

            assert model is not None
            return _topic_recovery(topics, load(model).topic_word())

        out.append(Case("ntm", "ntm", "LatentDirichletAllocation (batch VB)", "topic recovery (cosine)",
                        dict(NTM_HP), {"train": (RECORDIO, (Xtr, None)), "test": (RECORDIO, (Xte, None))}, ntm_ref,
                        ntm_job, needs_model=True, data=f"the LDA corpus, {len(Xtr):,} training docs, 50 epochs"))

    # ipinsights: reference = the same training code in-process.
    if want("ipinsights"):
        from tests.algorithms.test_ipinsights import HP as IPI_HP
        from tests.algorithms.test_ipinsights import _csv, _logins

        ipi_channels = {"train": ("text/csv", _csv(*_logins(n(20000)))),
                        "validation": ("text/csv", _csv(*_logins(n(2000), seed=1, last_octets=range(200, 256))))}
        out.append(Case("ipinsights", "ipinsights", "same torch code in-process", "validation AUC", dict(IPI_HP),
                        ipi_channels, _in_process("ipinsights", IPI_HP, ipi_channels, "validation:discriminator_auc"),
                        lambda m, _: m["validation:discriminator_auc"],
                        data=f"{n(20000):,} (user, IP) logins, 200 users, 5 epochs"))
    return out


# ----------------------------------------------------------------------------------------- platform


def dense_recordio(features: Any, labels: Any) -> bytes:
    """The bytes ``write_numpy_to_dense_tensor`` writes, built for the whole array at once: for a dense float32
    matrix (and float32 labels) every record is the same bytes except its values, so one record written by the SDK
    is the template and the values are copied in place. Checked against the SDK on the first rows; anything else
    (sparse, other dtypes) goes through the SDK itself (~30 µs a record, too slow for millions)."""
    import numpy as np

    from tests.algorithms.firstparty_support import recordio_bytes

    ok = (not hasattr(features, "tocsr") and features.dtype == np.float32 and features.ndim == 2
          and len(features) > 2 and (labels is None or labels.dtype == np.float32))
    if not ok:
        return recordio_bytes(features, labels)
    rng_row = np.random.default_rng(0).normal(size=(1, features.shape[1])).astype(np.float32)  # unique bytes
    rng_label = None if labels is None else np.array([0.123456789], dtype=np.float32)
    frame = np.frombuffer(recordio_bytes(rng_row, rng_label), dtype=np.uint8)
    raw = frame.tobytes()
    at = raw.find(rng_row.tobytes())
    assert at >= 0 and raw.count(rng_row.tobytes()) == 1
    out = np.tile(frame, (len(features), 1))
    out[:, at:at + 4 * features.shape[1]] = np.ascontiguousarray(features).view(np.uint8)
    if labels is not None:
        assert rng_label is not None
        label_at = raw.find(rng_label.tobytes())
        assert label_at >= 0 and raw.count(rng_label.tobytes()) == 1
        out[:, label_at:label_at + 4] = np.ascontiguousarray(labels.reshape(-1, 1)).view(np.uint8)
    body = out.tobytes()
    head = min(len(features), 500)
    expect = recordio_bytes(features[:head], None if labels is None else labels[:head])
    if body[:len(expect)] != expect:  # a layout this shortcut does not cover: the SDK for all of it
        return recordio_bytes(features, labels)
    return body


def upload(p: common.Platform, case: Case, prefix: str = PREFIX) -> None:
    """The channels under s3://bench-data/builtin-bench/<algorithm>/<channel>/: recordIO as two shards (what
    ``record_set()`` writes for two instances), CSV as one object."""
    for channel, (_, value) in case.channels.items():
        key = f"{prefix}/{case.name}/{channel}"
        if isinstance(value, bytes):
            p.put(common.BUCKET, f"{key}/part-0", value)
            continue
        features, labels = value
        half = features.shape[0] // 2
        for i, (lo, hi) in enumerate(((0, half), (half, features.shape[0]))):
            p.put(common.BUCKET, f"{key}/matrix_{i}.pbr",
                  dense_recordio(features[lo:hi], None if labels is None else labels[lo:hi]))


def model_reader(p: common.Platform) -> Callable[[str, str], bytes]:
    """(bucket, key) -> bytes from the platform's object store: S3 on ``opensage up``, the file:// tree
    (``<home>/s3/<bucket>/<key>``, tests/conftest.py ``start_server``) in-process."""
    if p.kind == "inproc":
        return lambda bucket, key: (p.home / "s3" / bucket / key).read_bytes()
    creds = json.loads((p.home / "credentials.json").read_text())
    s3 = common._client("s3", common._s3_endpoint_from_config(p.home), creds["access_key"], creds["secret_key"])
    return lambda bucket, key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def fetch_model(read: Callable[[str, str], bytes], uri: str, into: Path) -> Path:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = read(bucket, key)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    return into


def run_job(p: common.Platform, home: Path, case: Case, read: Callable[[str, str], bytes],
            prefix: str = PREFIX) -> dict[str, Any]:
    from tests.algorithms.firstparty_support import quality_metrics

    name = f"{case.name[:20]}-{time.time_ns()}"
    req = common.job_request(name, "xgboost")
    req["AlgorithmSpecification"]["TrainingImage"] = IMAGE.format(case.name)
    req["HyperParameters"] = {k: str(v) for k, v in case.hyperparameters.items()}
    req["InputDataConfig"] = [{"ChannelName": channel, "ContentType": content_type, "DataSource": {
        "S3DataSource": {"S3DataType": "S3Prefix",
                         "S3Uri": f"s3://{common.BUCKET}/{prefix}/{case.name}/{channel}"}}}
        for channel, (content_type, _) in case.channels.items()]
    control = p.pid or os.getpid()  # in-process: the control plane's threads are this process
    cpu0 = common.process_cpu(control)
    zcpu0 = zygote_children_cpu(home)
    t0 = time.time()
    p.sm.create_training_job(**req)
    result_file = None if DESCRIBE_POLL_ONLY else home / "jobs" / name / "algo-1" / "result.json"
    desc = common.wait_finished(p.sm, name, timeout=600, poll=0.05 if result_file is None else 0.01,
                                result_file=result_file)
    wall = time.time() - t0
    cpu1 = common.process_cpu(control)
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"job {name} ended {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    jobdir = home / "jobs" / name / "algo-1"
    ev = xgbbench._events(jobdir)
    lines = common._log_lines(jobdir / "logs" / "algo-1.log")
    first = next(((t, text) for t, text in lines if t >= ev["Training"]), (ev["Uploading"], ""))
    first_line = first[0]
    result_at = (jobdir / "result.json").stat().st_mtime
    agent = int((jobdir / "agent.pid").read_text())
    try:  # the finished agent is usually an unreaped zombie whose stat still holds its (and its child's) CPU
        job_cpu = sum(common.process_cpu(agent))
    except OSError:  # already reaped: its CPU moved to `opensage up`'s children total
        job_cpu = cpu1[1] - cpu0[1]
    job_cpu += zygote_children_cpu(home) - zcpu0  # a child of a zygote is reaped by the zygote
    model = None
    if case.needs_model:  # not timed: only for the quality number
        model = fetch_model(read, desc["ModelArtifacts"]["S3ModelArtifacts"], home / "models" / name)
    return {
        "wall": wall,
        "agent_start": ev["Downloading"] - desc["TrainingStartTime"].timestamp(),
        "create_to_launch": desc["TrainingStartTime"].timestamp() - t0,
        "download": ev["Training"] - ev["Downloading"],
        "to_first_line": first_line - ev["Training"],
        "algorithm": ev["Uploading"] - ev["Training"],
        "model_upload": result_at - ev["Uploading"],
        "to_completed": t0 + wall - result_at,
        "first_line_text": first[1][:100],
        "job_cpu": job_cpu,
        "control_plane_cpu": cpu1[0] - cpu0[0],
        "metric": case.job_metric(quality_metrics("\n".join(text for _, text in lines)), model),
    }


def zygote_children_cpu(home: Path) -> float:
    """CPU seconds of the reaped children of the platform's zygotes (runner/zygote.py): the jobs they forked."""
    total = 0.0
    for ready in (home / "zygotes").glob("*.json"):
        try:
            total += common.process_cpu(int(json.loads(ready.read_text())["pid"]))[1]
        except (OSError, ValueError, KeyError):
            continue
    return total


def warm_zygote(p: common.Platform, home: Path, case: Case, read: Callable[[str, str], bytes],
                prefix: str = PREFIX) -> float:
    """Untimed jobs until the platform's zygote for the case's module is ready (it starts once a second job
    asks for it: runner/zygote.py START_AFTER_JOBS); returns its preload seconds."""
    from opensage.runner import zygote

    module = f"opensage.algorithms.{case.module}.train"
    for _ in range(zygote.START_AFTER_JOBS):
        run_job(p, home, case, read, prefix)
    deadline = time.time() + 120
    while time.time() < deadline:
        for ready in (home / "zygotes").glob("*.json"):
            info = json.loads(ready.read_text())
            if info.get("module") == module:
                return float(info.get("preload_seconds") or 0)
        time.sleep(0.2)
    raise RuntimeError(f"no zygote for {module} became ready")


_ROOTS: dict[str, Path] = {}


def direct_root(case: Case) -> Path:
    """An /opt/ml tree with the case's channels (the tests' ``ml_root``), written once per algorithm; recordIO
    channels hold the objects ``upload`` puts in S3 (two shards, ``dense_recordio``'s bytes), so the job and
    the algorithm alone read the same files."""
    from tests.algorithms.firstparty_support import ml_root

    if case.key not in _ROOTS:
        tmp = _tempdir()
        _ROOTS[case.key] = root = ml_root(tmp, case.hyperparameters, {c: b"" for c in case.channels},
                                          {c: {"ContentType": ct} for c, (ct, _) in case.channels.items()})
        for channel, (_, value) in case.channels.items():
            directory = root / "input" / "data" / channel
            (directory / "part-0").unlink()
            if isinstance(value, bytes):
                (directory / "part-0").write_bytes(value)
                continue
            features, labels = value
            half = features.shape[0] // 2
            for i, (lo, hi) in enumerate(((0, half), (half, features.shape[0]))):
                (directory / f"matrix_{i}.pbr").write_bytes(
                    dense_recordio(features[lo:hi], None if labels is None else labels[lo:hi]))
    return _ROOTS[case.key]


def run_direct(case: Case) -> dict[str, Any]:
    """``python -m opensage.algorithms.<m>.train`` on a local /opt/ml tree: the algorithm process as the job
    runs it, without the platform (no agent, no download, no upload), timed from outside."""
    from tests.algorithms.firstparty_support import quality_metrics

    root = direct_root(case)
    shutil.rmtree(root / "model", ignore_errors=True)
    (root / "model").mkdir()
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(root), PYTHONUNBUFFERED="1")
    cpu0 = xgbbench._children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"opensage.algorithms.{case.module}.train"], env=env,
                          capture_output=True, text=True, cwd=common.REPO)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"direct {case.name} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    metric = case.job_metric(quality_metrics(done.stdout), root / "model")
    return {"wall": wall, "cpu": xgbbench._children_cpu() - cpu0, "metric": metric}


# The job's algorithm without the platform, as a zygote runs it: a helper process imports what the zygote
# preloads (untimed), then forks a child that runs the module as __main__ on the local /opt/ml tree; the child
# is timed from the fork to its exit (wall, and its CPU from wait4).
FORKED_HELPER = r"""
import json, os, runpy, sys, time
from opensage.runner import zygote
module, root, log = sys.argv[1], sys.argv[2], sys.argv[3]
zygote.preload(module)
os.environ.update(SAGEMAKER_BASE_DIR=root, PYTHONUNBUFFERED="1")
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    zygote._fresh_process_state()
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = zygote._exit_status(exc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": usage.ru_utime + usage.ru_stime,
                  "code": os.waitstatus_to_exitcode(status)}))
"""


def run_forked(case: Case) -> dict[str, Any]:
    """The algorithm alone, as the job's zygote child runs it but without the platform (no agent, S3 delivery,
    sandbox or upload): forked from a process with the zygote's imports done, reading local files (the page
    cache). job - this = what the platform adds; this / reference = the algorithm against its reference."""
    from tests.algorithms.firstparty_support import quality_metrics

    root = direct_root(case)
    shutil.rmtree(root / "model", ignore_errors=True)
    (root / "model").mkdir()
    log = root / "forked.log"
    done = subprocess.run([sys.executable, "-c", FORKED_HELPER, f"opensage.algorithms.{case.module}.train",
                           str(root), str(log)], capture_output=True, text=True, cwd=common.REPO)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"forked {case.name} failed: {done.stderr[-2000:]}")
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    output = log.read_text()
    if timing["code"] != 0:
        raise RuntimeError(f"forked {case.name} exited {timing['code']}: {output[-2000:]}")
    return {"wall": timing["wall"], "cpu": timing["cpu"],
            "metric": case.job_metric(quality_metrics(output), root / "model")}


def _cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # all, idle + iowait


def settle(busy: float = 0.1, window: float = 0.1, limit: float = 5.0) -> None:
    """Wait (at most ``limit`` s) until the machine is quiet: under ``busy`` of its CPU used over ``window``.
    What a job leaves running after its end (the platform's spare agent loading for the next job, ~0.65 s of
    CPU: executors/local.py) then lands in no timed run - neither the reference nor the next job."""
    if not os.path.exists("/proc/stat"):
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        total0, idle0 = _cpu_ticks()
        time.sleep(window)
        total1, idle1 = _cpu_ticks()
        if total1 > total0 and 1 - (idle1 - idle0) / (total1 - total0) < busy:
            return


def run_reference(case: Case) -> dict[str, float]:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    metric = case.reference()
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0, "metric": metric}


def import_time(module: str) -> float:
    """Wall seconds of a fresh ``python -c 'import opensage.algorithms.<m>.train'`` (interpreter + imports)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import opensage.algorithms.{module}.train"], check=True,
                   cwd=common.REPO)
    return time.perf_counter() - t0


def run(repeats: int, scale: float, only: set[str] | None, platform: str = "up",
        zygotes: str = "compare", scales: dict[str, float] | None = None, pca_features: int = 50,
        direct: bool = True, small_warmup: bool = False, forked: bool = False) -> dict[str, Any]:
    import sklearn.cluster  # noqa: F401  (imported before timing: the references exclude import time)
    import sklearn.decomposition  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    started = time.perf_counter()
    out: dict[str, Any] = {"repeats": repeats, "scale": scale, "platform": platform, "zygotes": zygotes,
                           "loadavg_before": os.getloadavg(),
                           "command": " ".join([".venv/bin/python", "benchmarks/bench_builtin_algorithms.py",
                                                *sys.argv[1:]]), "algorithms": []}
    data_started = time.perf_counter()
    selected = [c for c in cases(scale, only, scales, pca_features) if only is None or c.key in only]
    out["data_seconds"] = time.perf_counter() - data_started  # generating the data sets, not timed per job
    wprefix = PREFIX + "-warm" if small_warmup else PREFIX
    # "job": the platform as configured by --zygotes; "fresh": a second platform with zygotes off (the
    # path before them), both open at once so that every round times both on the same machine state.
    wanted = {"compare": {"fresh": "0", "job": "1"}, "on": {"job": "1"}, "off": {"job": "0"}}[zygotes]
    with tempfile.TemporaryDirectory(prefix="opensage-bench-1p-") as tmp, contextlib.ExitStack() as stack:
        platforms: dict[str, common.Platform] = {}
        for side, flag in wanted.items():
            os.environ["OPENSAGE_ZYGOTES"] = flag  # read when the platform's training reconciler starts
            (Path(tmp) / side).mkdir()
            platforms[side] = stack.enter_context(common.open_platform(platform, Path(tmp) / side))
        os.environ.pop("OPENSAGE_ZYGOTES", None)
        readers = {side: model_reader(p) for side, p in platforms.items()}
        for case in selected:
            row: dict[str, Any] = {"name": case.key, "reference_name": case.reference_name, "metric": case.metric,
                                   "data": case.data, "import": import_time(case.module), "reference": [],
                                   "direct": [], "loadavg": os.getloadavg()}
            runners: dict[str, Callable[[], dict[str, Any]]] = {"reference": lambda c=case: run_reference(c)}
            if direct:  # --no-direct: skip the platform-less algorithm process (saves a run per round at scale)
                runners["direct"] = lambda c=case: run_direct(c)
            if forked:  # --forked: the algorithm alone as a zygote child runs it, local files
                row["forked"] = []
                runners["forked"] = lambda c=case: run_forked(c)
            warm = case  # the untimed warm-up jobs: the case itself, or its small twin (--small-warmup)
            if small_warmup:
                twins = cases(1.0, {case.key}, None, pca_features)  # lda's block also builds ntm
                warm = next(c for c in twins if c.key == case.key)
            for side, p in platforms.items():
                if small_warmup:
                    upload(p, warm, PREFIX + "-warm")
                t_up = time.perf_counter()
                upload(p, case)
                row["upload_seconds"] = time.perf_counter() - t_up  # encode + put, before any timed job
                row[side] = []
                if wanted[side] == "1":
                    row["preload_seconds"] = warm_zygote(p, p.home, warm, readers[side], wprefix)
                else:
                    run_job(p, p.home, warm, readers[side], wprefix)  # the same untimed first job as the other side
                runners[side] = lambda c=case, q=p, s=side: run_job(q, q.home, c, readers[s])
            names = list(runners)
            for i in range(repeats):  # rotate which side goes first, so drift hits all of them
                for side in names[i % len(names):] + names[:i % len(names)]:
                    settle()
                    row[side].append(runners[side]())
            out["algorithms"].append(row)
            print(f"{case.key}: reference {_median(row['reference'], 'wall'):.2f} s, job "
                  f"{_median(row['job'], 'wall'):.2f} s", file=sys.stderr, flush=True)
    out["loadavg_after"] = os.getloadavg()
    out["total_minutes"] = (time.perf_counter() - started) / 60
    return out


# ----------------------------------------------------------------------------------------- report


_median = xgbbench._median


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def markdown(r: dict[str, Any]) -> str:
    compare = r.get("zygotes") == "compare"
    forked = any(a.get("forked") for a in r["algorithms"])
    alone_head = " algorithm alone wall s | alone ÷ reference | job − alone s |" if forked else ""
    rows = [
        f"Platform: {'`opensage up` (SeaweedFS S3)' if r['platform'] == 'up' else 'in-process control plane (tests/conftest.py start_server, file:// object store; real agent and algorithm processes)'}. "
        f"{r['repeats']} rotating round(s) per algorithm: medians; wall seconds with every run in brackets. "
        "Ratio = job wall ÷ reference wall (medians). "
        + ("Job end seen by DescribeTrainingJob every 50 ms. " if DESCRIBE_POLL_ONLY else
           "Job end seen by a stat of the agent's result.json every 10 ms, then DescribeTrainingJob every 10 ms. ")
        + ("*before* = a platform with zygotes off (`OPENSAGE_ZYGOTES=0`: a fresh algorithm process per job, the "
           "path before them); *after* = a platform with zygotes on, its zygote warmed by untimed jobs (each side "
           "gets the same untimed jobs first); both platforms open at once, rounds interleaved. " if compare else "")
        + "Direct process = `python -m opensage.algorithms.<m>.train` on a local /opt/ml tree (a fresh algorithm "
        "process without the platform)."
        + (" Algorithm alone = the same module run in a child forked from a process with the zygote's imports done "
           "(as the job's zygote child runs it), on a local /opt/ml tree holding the job's objects (page cache): no "
           "agent, S3 delivery, sandbox or upload; ÷ reference is the algorithm against its reference, job − alone "
           "what the platform adds." if forked else ""),
        "",
    ]
    if compare:
        rows += ["| algorithm | data | reference | reference wall s | job wall s before (fresh process) | ratio before "
                 "| job wall s after (zygote) | ratio after | job CPU s before / after | direct process wall s |"
                 + alone_head + " quality: reference / job | load (1 min) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * (3 if forked else 0)]
    else:
        rows += ["| algorithm | data | reference | reference wall s | job wall s (create→Completed) | ratio | "
                 "job CPU s | direct process wall s |" + alone_head + " quality: reference / job | load (1 min) |",
                 "|---|---|---|---|---|---|---|---|---|---|" + "---|" * (3 if forked else 0)]
    for a in r["algorithms"]:
        ref, job = a["reference"], a["job"]
        cells = [a["name"], a["data"], a["reference_name"], xgbbench._cell(ref, "wall").split(" |")[0]]
        if compare:
            fresh = a["fresh"]
            cells += [xgbbench._cell(fresh, "wall").split(" |")[0],
                      f"{_median(fresh, 'wall') / _median(ref, 'wall'):.2f}×",
                      xgbbench._cell(job, "wall").split(" |")[0],
                      f"**{_median(job, 'wall') / _median(ref, 'wall'):.2f}×**",
                      f"{_median(fresh, 'job_cpu'):.2f} / {_median(job, 'job_cpu'):.2f}"]
        else:
            cells += [xgbbench._cell(job, "wall").split(" |")[0], f"{_median(job, 'wall') / _median(ref, 'wall'):.2f}×",
                      f"{_median(job, 'job_cpu'):.2f}"]
        cells += [f"{_median(a['direct'], 'wall'):.2f}" if a["direct"] else "—"]
        if forked:
            alone = a.get("forked") or []
            cells += [xgbbench._cell(alone, "wall").split(" |")[0] if alone else "—",
                      f"{_median(alone, 'wall') / _median(ref, 'wall'):.2f}×" if alone else "—",
                      f"{_median(job, 'wall') - _median(alone, 'wall'):.2f}" if alone else "—"]
        cells += [f"{a['metric']}: {_fmt(_median(ref, 'metric'))} / {_fmt(_median(job, 'metric'))}"
                  + (f" / alone {_fmt(_median(a['forked'], 'metric'))}" if a.get("forked") else ""),
                  f"{a['loadavg'][0]:.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    rows += [
        "",
        "Where the job's time goes (medians, seconds, from the agent's files): create→agent launched "
        "(TrainingStartTime); agent start (launched→Downloading); channel download (Downloading→Training); the "
        "algorithm process (Training→Uploading: start to exit: reading the files, training, evaluation, model save; "
        "plus, for a fresh process, the interpreter and imports); Training→first log line of the algorithm; model "
        "upload (Uploading→result.json); result→Completed seen by DescribeTrainingJob; a fresh `python -c 'import "
        "opensage.algorithms.<m>.train'` measured apart; the zygote's preload (once per platform, not in any job).",
        "",
        "| algorithm | variant | create→launch | agent start | download | algorithm process | →first line | upload | "
        "→Completed | fresh import (apart) | zygote preload |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in r["algorithms"]:
        for side in (("fresh", "job") if compare else ("job",)):
            job = a[side]
            label = ("before (fresh process)" if side == "fresh" else "after (zygote)") if compare else "job"
            rows.append(
                f"| {a['name']} | {label} | {_median(job, 'create_to_launch'):.2f} | {_median(job, 'agent_start'):.2f} | "
                f"{_median(job, 'download'):.2f} | {_median(job, 'algorithm'):.2f} | "
                f"{_median(job, 'to_first_line'):.2f} | {_median(job, 'model_upload'):.2f} | "
                f"{_median(job, 'to_completed'):.2f} | {a['import']:.2f} | "
                f"{a.get('preload_seconds', 0) if side == 'job' and r.get('zygotes') != 'off' else 0:.2f} |")
    rows += ["", f"Total wall time {r['total_minutes']:.1f} min; load average (1/5/15 min) before / after: "
             f"{' '.join(f'{x:.1f}' for x in r['loadavg_before'])} / "
             f"{' '.join(f'{x:.1f}' for x in r['loadavg_after'])}. Command: `{r['command']}`"]
    return "\n".join(rows)


def warm_memory(gib: float) -> None:
    """Touch ``gib`` GiB once, a GiB at a time, and give it back. In a VM whose memory the host backs on first
    touch (this project's machines), a page's first use since boot costs ~7x a later one (measured: 2 GiB in
    3.75 s the first time, 0.4-0.5 s after), and the jobs' fresh processes, not the warm reference, are the
    ones that meet such pages: measured ratios then depend on how long the machine has been up."""
    import numpy as np

    started, left = time.perf_counter(), gib
    while left > 0:
        block = np.ones(int(min(left, 1.0) * (1 << 30)) // 8)
        del block
        left -= 1.0
    print(f"warmed {gib:g} GiB of memory in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every data set's row count")
    ap.add_argument("--scale-of", default="",
                    help="per-algorithm row multipliers overriding --scale, e.g. kmeans=100,knn=6")
    ap.add_argument("--pca-features", type=int, default=50, help="pca's data width (columns)")
    ap.add_argument("--no-direct", action="store_true",
                    help="skip the direct algorithm process (python -m ...train without the platform)")
    ap.add_argument("--forked", action="store_true",
                    help="also time the algorithm alone: forked from a process with the zygote's imports, local "
                         "files (job - forked = what the platform adds)")
    ap.add_argument("--small-warmup", action="store_true",
                    help="the untimed warm-up jobs (zygote start) on the default-size (scale 1) twin of each data set")
    ap.add_argument("--only", help="comma-separated image names (linear-learner,kmeans,...)")
    ap.add_argument("--platform", choices=("up", "inproc"), default="up",
                    help="up: `opensage up` subprocess (SeaweedFS); inproc: tests/conftest.py start_server (file://)")
    ap.add_argument("--zygotes", choices=("compare", "on", "off"), default="compare",
                    help="compare: a platform with zygotes off (before) and one with them on (after), side by side")
    ap.add_argument("--describe-poll-only", action="store_true",
                    help="wait for each job by DescribeTrainingJob every 50 ms alone (as before 2026-11-27; "
                         "20 calls a second slow the job being measured on 2 cores)")
    ap.add_argument("--warm-memory", type=float, default=0.0, metavar="GIB",
                    help="first touch this many GiB once (a VM backs memory on first touch: see warm_memory)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.warm_memory:
        warm_memory(args.warm_memory)
    global DESCRIBE_POLL_ONLY
    DESCRIBE_POLL_ONLY = args.describe_poll_only
    with contextlib.redirect_stdout(sys.stderr):  # the algorithms' in-process logs stay out of the report
        scales = {name: float(f) for name, _, f in (x.partition("=") for x in args.scale_of.split(",") if x)}
        result = run(args.repeats, args.scale, set(args.only.split(",")) if args.only else None, args.platform,
                     args.zygotes, scales, args.pca_features, not args.no_direct,
                     args.small_warmup, args.forked)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
