"""AWS's scikit-learn featurizer pattern (the inference-pipeline notebooks' ``sklearn_abalone_featurizer.py``):
the inference script imports the container's own toolkit, ``from sagemaker_containers.beta.framework import
encoders, worker``, and answers with ``worker.Response(encoders.encode(prediction, accept), mimetype=accept)``.
Those imports need ``pkg_resources`` (setuptools < 81) in the image's environment."""

from __future__ import annotations

import json
import textwrap
import time

import numpy as np
import pytest

from tests.conftest import ROLE
from tests.modelfiles import tar_gz

pytestmark = pytest.mark.slow  # builds the sagemaker-scikit-learn:1.2-1 environment (once per home)

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
BUCKET = "featurizer"
FEATURIZER = textwrap.dedent('''
    import json
    import os
    from io import StringIO

    import numpy as np
    import pandas as pd
    from sagemaker_containers.beta.framework import encoders, worker
    from sklearn.preprocessing import StandardScaler


    def model_fn(model_dir):
        with open(os.path.join(model_dir, "scaler.json")) as f:
            params = json.load(f)
        scaler = StandardScaler()
        scaler.mean_ = np.array(params["mean"])
        scaler.scale_ = np.array(params["scale"])
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = len(scaler.mean_)
        return scaler


    def input_fn(input_data, content_type):
        if content_type == "text/csv":
            return pd.read_csv(StringIO(input_data), header=None)
        raise ValueError("{} not supported by script!".format(content_type))


    def predict_fn(input_data, model):
        return model.transform(input_data.values)


    def output_fn(prediction, accept):
        if accept == "application/json":
            instances = [{"features": row} for row in prediction.tolist()]
            return worker.Response(json.dumps({"instances": instances}), mimetype=accept)
        if accept == "text/csv":
            return worker.Response(encoders.encode(prediction, accept), mimetype=accept)
        raise RuntimeError("{} accept type is not supported by this script.".format(accept))
''')


def test_invoke_endpoint_sklearn_featurizer_with_sagemaker_containers_worker_response(server):
    from sklearn.datasets import load_diabetes

    X = load_diabetes().data[:40, :4]
    mean, scale = X.mean(axis=0), X.std(axis=0)
    store = server.store()
    store.ensure_bucket(BUCKET)
    store.put_bytes(BUCKET, "featurizer/model.tar.gz", tar_gz({
        "scaler.json": json.dumps({"mean": mean.tolist(), "scale": scale.tolist()}).encode(),
        "code/sklearn_featurizer.py": FEATURIZER.encode()}))
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    sm.create_model(ModelName="featurizer", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/featurizer/model.tar.gz",
        "Environment": {"SAGEMAKER_PROGRAM": "sklearn_featurizer.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}})
    sm.create_endpoint_config(EndpointConfigName="featurizer", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "featurizer", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="featurizer", EndpointConfigName="featurizer")
    deadline = time.time() + 420  # the first use builds the image's environment
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName="featurizer")
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            break
        time.sleep(0.5)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    rows = X[:3]
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    expected = (rows - mean) / scale
    r = rt.invoke_endpoint(EndpointName="featurizer", ContentType="text/csv", Accept="text/csv", Body=body)
    assert r["ContentType"].startswith("text/csv")
    got = np.array([[float(v) for v in line.split(",")] for line in r["Body"].read().decode().splitlines()])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    r = rt.invoke_endpoint(EndpointName="featurizer", ContentType="text/csv", Accept="application/json", Body=body)
    assert r["ContentType"].startswith("application/json")
    instances = json.loads(r["Body"].read())["instances"]
    np.testing.assert_allclose([i["features"] for i in instances], expected, rtol=1e-6)
