"""Example 3: A/B testing two models on one endpoint, then a canary rollout (boto3 only).

    python examples/03_ab_variants_canary.py

1. Two built-in XGBoost training jobs (a shallow and a deeper model) on the same data.
2. One endpoint with two production variants, 50/50: requests are split by weight, TargetVariant picks
   one, UpdateEndpointWeightsAndCapacities moves the traffic without a redeploy.
3. A second endpoint serving model A is updated to model B with a canary deployment: 50% of the capacity
   first, then (after WaitIntervalInSeconds) all of it, with no failed request in between.
"""

import io
import sys
import time
from collections import Counter

import boto3
import numpy as np
from sklearn.datasets import load_breast_cancer

ROLE = "arn:aws:iam::111122223333:role/SageMakerRole"  # any role ARN string locally
BUCKET = "opensage-examples"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"  # built-in XGBoost
RUN = time.strftime("%Y%m%d-%H%M%S")  # names must be unique: add a timestamp, as the SDK does

sm = boto3.client("sagemaker")
runtime = boto3.client("sagemaker-runtime")
s3 = boto3.client("s3")
# boto3's waiters poll every 30-120 s (sized for AWS); locally things are ready in seconds.
FAST = {"Delay": 2, "MaxAttempts": 150}


def upload_training_data() -> str:
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    X, y = load_breast_cancer(return_X_y=True)
    buf = io.BytesIO()
    np.savetxt(buf, np.column_stack([y, X]), delimiter=",", fmt="%.6g")  # label first, no header
    s3.put_object(Bucket=BUCKET, Key="ab/train/train.csv", Body=buf.getvalue())
    return f"s3://{BUCKET}/ab/train/"


def train(name: str, train_uri: str, max_depth: int) -> str:
    """A built-in XGBoost training job; returns its model artifact (model.tar.gz)."""
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"objective": "binary:logistic", "num_round": "20", "max_depth": str(max_depth)},
        InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": train_uri}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/ab/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600})
    return name


def create_model(name: str, job: str) -> None:
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=job, WaiterConfig=FAST)
    desc = sm.describe_training_job(TrainingJobName=job)
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"{job}: {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"]})


def endpoint_config(name: str, variants: dict[str, str]) -> None:
    """One production variant per (variant name -> model), equal weights, one instance each."""
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": variant, "ModelName": model, "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0} for variant, model in variants.items()])


def invoke(endpoint: str, row: str, **kw) -> str:
    return runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=row,
                                   **kw)["InvokedProductionVariant"]


def main() -> int:
    X, _ = load_breast_cancer(return_X_y=True)
    row = ",".join(f"{v:.6g}" for v in X[0])
    train_uri = upload_training_data()
    # Both jobs run at the same time; then one model per artifact.
    model_a, model_b = f"ab-shallow-{RUN}", f"ab-deep-{RUN}"
    jobs = {model_a: train(model_a, train_uri, 2), model_b: train(model_b, train_uri, 6)}
    for model, job in jobs.items():
        create_model(model, job)

    ab, canary = f"ab-test-{RUN}", f"canary-{RUN}"
    configs = [f"{ab}-cfg", f"{canary}-a", f"{canary}-b"]
    endpoint_config(configs[0], {"VariantA": model_a, "VariantB": model_b})
    endpoint_config(configs[1], {"AllTraffic": model_a})
    endpoint_config(configs[2], {"AllTraffic": model_b})
    try:
        sm.create_endpoint(EndpointName=ab, EndpointConfigName=configs[0])
        sm.create_endpoint(EndpointName=canary, EndpointConfigName=configs[1])
        for name in (ab, canary):
            sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)

        # --- A/B: traffic split by weight, a chosen variant with TargetVariant -----------------------
        split = Counter(invoke(ab, row) for _ in range(40))
        print("50/50 split over 40 requests:", dict(split))
        assert invoke(ab, row, TargetVariant="VariantB") == "VariantB"
        # Send everything to B (weights are relative), without redeploying anything.
        sm.update_endpoint_weights_and_capacities(EndpointName=ab, DesiredWeightsAndCapacities=[
            {"VariantName": "VariantA", "DesiredWeight": 0.0}, {"VariantName": "VariantB", "DesiredWeight": 1.0}])
        sm.get_waiter("endpoint_in_service").wait(EndpointName=ab, WaiterConfig=FAST)
        after = Counter(invoke(ab, row) for _ in range(20))
        print("after moving the weight to B:", dict(after))
        assert after == {"VariantB": 20}, after

        # --- Canary: model A -> model B, half the capacity first, then all ---------------------------
        sm.update_endpoint(EndpointName=canary, EndpointConfigName=configs[2], DeploymentConfig={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 5,
                                                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}},
                "TerminationWaitInSeconds": 0, "MaximumExecutionTimeoutInSeconds": 600}})
        served = 0
        while sm.describe_endpoint(EndpointName=canary)["EndpointStatus"] == "Updating":
            invoke(canary, row)  # raises if any request failed during the rollout
            served += 1
            time.sleep(0.1)
        desc = sm.describe_endpoint(EndpointName=canary)
        print(f"canary rollout finished: {desc['EndpointStatus']} on {desc['EndpointConfigName']}, "
              f"{served} requests served during the update")
        assert desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == configs[2], desc
    finally:
        # Clean up everything this example created.
        for name in (ab, canary):
            try:
                sm.delete_endpoint(EndpointName=name)
            except sm.exceptions.ClientError:
                pass
        for name in configs:
            sm.delete_endpoint_config(EndpointConfigName=name)
        for name in jobs:
            sm.delete_model(ModelName=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
