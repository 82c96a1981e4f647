"""Example 2: script mode (your own scikit-learn training script) and a batch transform job (SDK v2).

    python examples/02_sklearn_script_batch_transform.py

The estimator uploads sklearn_script/ to S3, the job runs train.py with its hyperparameters, and the
transformer scores a CSV file in S3 with the trained model, writing <input name>.out next to it.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import sagemaker
from sagemaker.sklearn import SKLearn
from sklearn.datasets import load_breast_cancer

ROLE = "arn:aws:iam::111122223333:role/SageMakerRole"  # any role ARN string locally
HERE = Path(__file__).resolve().parent


def main() -> int:
    session = sagemaker.Session()
    bucket = session.default_bucket()
    X, y = load_breast_cancer(return_X_y=True)

    with tempfile.TemporaryDirectory() as tmp:
        # Training data (label first) and the rows to score (features only), uploaded to S3.
        train, batch = Path(tmp) / "train.csv", Path(tmp) / "batch.csv"
        np.savetxt(train, np.column_stack([y, X]), delimiter=",", fmt="%.6g")
        np.savetxt(batch, X[:100], delimiter=",", fmt="%.6g")
        train_uri = session.upload_data(str(train), bucket=bucket, key_prefix="examples/sklearn/train")
        batch_uri = session.upload_data(str(batch), bucket=bucket, key_prefix="examples/sklearn/batch")

    # Script mode: the scikit-learn framework image runs sklearn_script/train.py.
    estimator = SKLearn(entry_point="train.py", source_dir=str(HERE / "sklearn_script"),
                        framework_version="1.2-1", py_version="py3", role=ROLE,
                        instance_count=1, instance_type="ml.m5.large", sagemaker_session=session,
                        output_path=f"s3://{bucket}/examples/sklearn/output",
                        hyperparameters={"C": 0.5})
    estimator.fit({"train": train_uri})

    # Batch transform: one model server, the file split into lines and sent in mini-batches.
    output = f"s3://{bucket}/examples/sklearn/predictions"
    transformer = estimator.transformer(instance_count=1, instance_type="ml.m5.large", output_path=output,
                                        strategy="MultiRecord", assemble_with="Line", accept="text/csv")
    transformer.transform(batch_uri, content_type="text/csv", split_type="Line")
    transformer.wait()

    body = session.read_s3_file(bucket, "examples/sklearn/predictions/batch.csv.out")
    predictions = np.array([float(v) for v in body.split()])
    accuracy = float((predictions == y[:100]).mean())
    print(f"transform job {transformer.latest_transform_job.name}: {len(predictions)} predictions, "
          f"accuracy {accuracy:.3f}")
    # The model the transformer created stays until deleted (as on AWS).
    session.delete_model(transformer.model_name)
    return 0 if len(predictions) == 100 and accuracy > 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
