"""AWS's XGBoost script-mode notebook unchanged through SDK v2: ``XGBoost(entry_point="abalone.py",
framework_version="1.7-1")`` fits a script that imports the container's own ``sagemaker_xgboost_container``
(``distributed``, ``data_utils.get_dmatrix``; not on PyPI, opensage/toolkits stands in), then deploys it and
predicts with the SDK's default LibSVM serializer."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.test_xgboost_container_toolkit_api import ABALONE, _libsvm
from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_xgboost_estimator_abalone_script_with_container_toolkit_fits_deploys_predicts(sm_session, tmp_path):
    from sagemaker.inputs import TrainingInput
    from sagemaker.xgboost import XGBoost
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    bucket = sm_session.default_bucket()
    (tmp_path / "abalone.train").write_bytes(_libsvm(X[:300], y[:300]))
    (tmp_path / "abalone.validation").write_bytes(_libsvm(X[300:], y[300:]))
    train = sm_session.upload_data(str(tmp_path / "abalone.train"), bucket=bucket, key_prefix="e2e/abalone/train")
    validation = sm_session.upload_data(str(tmp_path / "abalone.validation"), bucket=bucket,
                                        key_prefix="e2e/abalone/validation")
    src = tmp_path / "src"
    src.mkdir()
    (src / "abalone.py").write_text(ABALONE)
    estimator = XGBoost(entry_point="abalone.py", source_dir=str(src), framework_version="1.7-1", role=ROLE,
                        instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session,
                        hyperparameters={"max_depth": 3, "eta": 0.2, "objective": "reg:squarederror",
                                         "num_round": 20})
    estimator.fit({"train": TrainingInput(train.rsplit("/", 1)[0], content_type="text/libsvm"),
                   "validation": TrainingInput(validation.rsplit("/", 1)[0], content_type="text/libsvm")},
                  logs=False)
    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large")
    try:
        answer = predictor.predict(_libsvm(X[:5], y[:5]).decode())
        predictions = np.array([float(v) for row in answer for v in row if v != ""]).ravel()
        assert predictions.shape == (5,)
        # 20 rounds of eta 0.2 from base 0.5 on targets of 25 ... 346: the fit is far from the start.
        assert np.corrcoef(predictions, y[:5])[0, 1] > 0.5
    finally:
        predictor.delete_endpoint()
