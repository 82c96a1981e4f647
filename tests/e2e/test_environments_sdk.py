"""Framework environments end to end: `opensage pull` builds an image's environment, and an SDK v2 SKLearn
estimator written for the 1.2-1 image (toolkit imports included) trains and serves with that image's
scikit-learn, unchanged."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def test_opensage_pull_sklearn_image_builds_environment_with_progress(platform):
    done = subprocess.run([sys.executable, "-m", "opensage.cli.main", "pull", SKLEARN_IMAGE, "--home",
                           str(platform.home)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "environment ready at" in done.stdout
    assert str(platform.home / "environments") in done.stdout
    # Progress while building (uv's lines), or the cached environment named when it was there already.
    assert ("Preparing the environment for image sagemaker-scikit-learn:1.2-1" in done.stderr
            or "Using the cached environment" in done.stderr), done.stderr[-2000:]
    again = subprocess.run([sys.executable, "-m", "opensage.cli.main", "pull", SKLEARN_IMAGE, "--home",
                            str(platform.home)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Using the cached environment" in again.stderr


def test_sklearn_estimator_toolkit_script_trains_and_serves_with_image_sklearn(sm_session, tmp_path):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer
    from sagemaker.sklearn import SKLearn

    bucket = sm_session.default_bucket()
    data = tmp_path / "train.csv"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    np.savetxt(data, np.column_stack([(X[:, 0] > 0).astype(int), X]), delimiter=",")
    uri = sm_session.upload_data(str(data), bucket=bucket, key_prefix="e2e/envsk/train")
    src = tmp_path / "src"
    src.mkdir()
    # The shape of AWS's sklearn examples: the toolkits' environment objects, model_fn / predict_fn.
    (src / "train.py").write_text(textwrap.dedent('''
        import os, joblib, numpy as np, sklearn
        import sagemaker_containers
        from sagemaker_training import environment
        from sklearn.linear_model import LogisticRegression

        def model_fn(model_dir):
            return joblib.load(os.path.join(model_dir, "model.joblib"))

        def predict_fn(data, model):
            return [sklearn.__version__] + model.predict(np.asarray(data)).tolist()

        if __name__ == "__main__":
            env = environment.Environment()
            assert sagemaker_containers.training_env().model_dir == env.model_dir
            d = np.loadtxt(os.path.join(env.channel_input_dirs["train"], "train.csv"), delimiter=",")
            m = LogisticRegression().fit(d[:, 1:], d[:, 0])
            joblib.dump(m, os.path.join(env.model_dir, "model.joblib"))
            print("trained with scikit-learn", sklearn.__version__)
    '''))
    est = SKLearn(entry_point="train.py", source_dir=str(src), framework_version="1.2-1", role=ROLE,
                  instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session)
    est.fit({"train": uri}, logs=False)
    predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=JSONSerializer(),
                           deserializer=JSONDeserializer())
    try:
        answer = predictor.predict([[3.0, 0.0], [-3.0, 0.0]])
        assert answer[0].startswith("1.2.") and answer[1:] == [1.0, 0.0]
    finally:
        predictor.delete_endpoint()
