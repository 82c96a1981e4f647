"""Example 4: asynchronous inference with autoscaling on the queue's backlog (boto3 only).

    python examples/04_async_autoscaling.py

An async endpoint answers InvokeEndpointAsync at once (202) with where the result will be, queues the
request, and writes the model's answer to S3. Application Auto Scaling then sizes the endpoint from the
backlog per instance, as AWS's asynchronous-inference notebook does.
"""

import io
import sys
import time

import boto3
import numpy as np
from sklearn.datasets import load_breast_cancer

ROLE = "arn:aws:iam::111122223333:role/SageMakerRole"  # any role ARN string locally
BUCKET = "opensage-examples"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"  # built-in XGBoost
RUN = time.strftime("%Y%m%d-%H%M%S")
FAST = {"Delay": 2, "MaxAttempts": 150}  # boto3's waiters are sized for AWS (30-120 s between polls)

sm = boto3.client("sagemaker")
runtime = boto3.client("sagemaker-runtime")
s3 = boto3.client("s3")
autoscaling = boto3.client("application-autoscaling")  # also answered by OpenSage, never by AWS


def train_model(name: str) -> None:
    """A built-in XGBoost model to serve (see example 3 for the same steps explained)."""
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    X, y = load_breast_cancer(return_X_y=True)
    buf = io.BytesIO()
    np.savetxt(buf, np.column_stack([y, X]), delimiter=",", fmt="%.6g")
    s3.put_object(Bucket=BUCKET, Key="async/train/train.csv", Body=buf.getvalue())
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"objective": "binary:logistic", "num_round": "20"},
        InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/async/train/"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/async/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600})
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=FAST)
    desc = sm.describe_training_job(TrainingJobName=name)
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"]})


def wait_for_object(uri: str, timeout: float = 120) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            time.sleep(0.5)
    raise TimeoutError(f"no result at {uri} after {timeout} s")


def main() -> int:
    model = endpoint = f"async-xgb-{RUN}"
    train_model(model)

    # An endpoint config with AsyncInferenceConfig makes an asynchronous endpoint.
    sm.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
        AsyncInferenceConfig={
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
            "OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/async/results",
                             "S3FailurePath": f"s3://{BUCKET}/async/failures"}})
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
    resource_id = f"endpoint/{endpoint}/variant/AllTraffic"
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=FAST)

        # Autoscaling: register the variant's instance count as a scalable target (1..3 instances) and
        # track a backlog of 5 queued requests per instance (the metric SageMaker publishes for async
        # endpoints; AWS's notebook uses the same policy).
        autoscaling.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource_id,
            ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=3)
        autoscaling.put_scaling_policy(
            PolicyName=f"{endpoint}-backlog", ServiceNamespace="sagemaker", ResourceId=resource_id,
            ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 5.0, "ScaleInCooldown": 60, "ScaleOutCooldown": 60,
                "CustomizedMetricSpecification": {
                    "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                    "Dimensions": [{"Name": "EndpointName", "Value": endpoint}], "Statistic": "Average"}})
        policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource_id)
        print("scaling policies:", [p["PolicyName"] for p in policies["ScalingPolicies"]])

        # Async requests: the input lives in S3; the answer names where the output will appear.
        X, y = load_breast_cancer(return_X_y=True)
        outputs = []
        for i in range(5):
            key = f"async/inputs/{RUN}-{i}.csv"
            rows = "\n".join(",".join(f"{v:.6g}" for v in r) for r in X[i * 10:(i + 1) * 10])
            s3.put_object(Bucket=BUCKET, Key=key, Body=rows.encode(), ContentType="text/csv")
            response = runtime.invoke_endpoint_async(EndpointName=endpoint, ContentType="text/csv",
                                                     InputLocation=f"s3://{BUCKET}/{key}")
            outputs.append(response["OutputLocation"])
        print("queued", len(outputs), "requests; first result at", outputs[0])
        scores = np.array([float(v) for uri in outputs for v in wait_for_object(uri).decode().split()])
        accuracy = float(((scores > 0.5) == y[:50]).mean())
        print(f"{len(scores)} scores from S3, accuracy {accuracy:.3f}")
        if len(scores) != 50 or accuracy < 0.9:
            return 1
    finally:
        # Deregistering the target also deletes its policies.
        try:
            autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource_id,
                                                   ScalableDimension="sagemaker:variant:DesiredInstanceCount")
        except autoscaling.exceptions.ObjectNotFoundException:
            pass
        sm.delete_endpoint(EndpointName=endpoint)
        sm.delete_endpoint_config(EndpointConfigName=endpoint)
        sm.delete_model(ModelName=model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
