"""Framework images known by name that have no environment here (TensorFlow, Hugging Face): a script-mode
CreateTrainingJob is accepted, as SageMaker accepts any image, and the job fails at once with a FailureReason
naming the images that do have environments, not with an ImportError minutes later."""

from __future__ import annotations

import pytest

from tests.conftest import training_request, wait_for_status

DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com"


@pytest.mark.parametrize("image", [f"{DLC}/tensorflow-training:2.14.1-cpu-py310-ubuntu20.04-sagemaker",
                                   f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121"])
def test_create_training_job_script_mode_framework_without_environment_fails_at_once(server, image):
    sm = server.client("sagemaker")
    store = server.store()
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "data/train/part-0.csv", b"1,0.5\n")
    name = "noenv-" + image.rsplit("/", 1)[1].split(":")[0]
    req = training_request(name, HyperParameters={"sagemaker_program": '"train.py"',
                                                  "sagemaker_submit_directory": '"s3://bucket1/code/src.tar.gz"'})
    req["AlgorithmSpecification"]["TrainingImage"] = image
    sm.create_training_job(**req)
    d = wait_for_status(sm, name, timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    assert image in d["FailureReason"] and "sagemaker-scikit-learn" in d["FailureReason"]
    assert "pytorch-training" in d["FailureReason"]
