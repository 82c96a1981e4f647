"""Example 1: train the built-in XGBoost algorithm, deploy it, predict, clean up (SageMaker Python SDK v2).

This is the code of AWS's introductory notebooks, unchanged: only the environment points it at OpenSage.
Run it after `make up` (in another shell) and `eval "$(.venv/bin/opensage env)"`:

    python examples/01_xgboost_train_deploy.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import sagemaker
from sagemaker.deserializers import CSVDeserializer
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.serializers import CSVSerializer
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

# Any IAM role ARN string will do locally (there is no IAM); on AWS, use your SageMaker execution role.
ROLE = "arn:aws:iam::111122223333:role/SageMakerRole"


def main() -> int:
    session = sagemaker.Session()  # reads AWS_PROFILE=opensage and the SDK config `opensage env` exported
    bucket = session.default_bucket()  # created by `opensage up`
    region = session.boto_region_name

    # 1. Data: scikit-learn's breast cancer set, written the way built-in XGBoost reads CSV (label first,
    #    no header), and uploaded to the default bucket.
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, features, labels in (("train", X_train, y_train), ("validation", X_test, y_test)):
            path = Path(tmp) / f"{name}.csv"
            np.savetxt(path, np.column_stack([labels, features]), delimiter=",", fmt="%.6g")
            session.upload_data(str(path), bucket=bucket, key_prefix=f"examples/xgboost/{name}")
    prefix = f"s3://{bucket}/examples/xgboost"

    # 2. Train: the same image URI as on AWS; OpenSage runs its built-in XGBoost for it.
    estimator = Estimator(
        image_uri=sagemaker.image_uris.retrieve("xgboost", region, "1.7-1"),
        role=ROLE, instance_count=1, instance_type="ml.m5.large",
        output_path=f"{prefix}/output", sagemaker_session=session,
        hyperparameters={"objective": "binary:logistic", "num_round": 50, "max_depth": 4, "eta": 0.3},
    )
    estimator.fit({"train": TrainingInput(f"{prefix}/train", content_type="text/csv"),
                   "validation": TrainingInput(f"{prefix}/validation", content_type="text/csv")})
    print("model artifact:", estimator.model_data)

    # 3. Deploy to a real-time endpoint and predict: CSV rows in, one probability per row out.
    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 serializer=CSVSerializer(), deserializer=CSVDeserializer())
    try:
        scores = np.array([float(row[0]) for row in predictor.predict(X_test)])
        accuracy = float(((scores > 0.5) == y_test).mean())
        print(f"endpoint {predictor.endpoint_name}: accuracy on {len(y_test)} held-out rows = {accuracy:.3f}")
        if accuracy < 0.9:
            print("accuracy is lower than expected", file=sys.stderr)
            return 1
    finally:
        # 4. Clean up: the model first (the predictor finds it through the endpoint's config), then the
        #    endpoint (its model servers) and its config.
        predictor.delete_model()
        predictor.delete_endpoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
