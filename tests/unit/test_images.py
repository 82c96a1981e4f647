"""Image URI -> what runs (opensage.images)."""

from __future__ import annotations

import sys

import pytest

from opensage.images import environment_for_image, image_version, parse_repository, resolve_training_image

ECR = "683313688378.dkr.ecr.us-east-1.amazonaws.com"
DLC = "763104351884.dkr.ecr.us-west-2.amazonaws.com"
V3_ENTRYPOINT = ["/bin/bash"]
V3_ARGUMENTS = ["-c", "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && "
                      "/opt/ml/input/data/sm_drivers/sm_train.sh"]


@pytest.mark.parametrize(("uri", "repository"), [
    (f"{ECR}/sagemaker-xgboost:1.7-1", "sagemaker-xgboost"),
    (f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", "sagemaker-scikit-learn"),
    (f"{DLC}/pytorch-training:2.1-cpu-py310", "pytorch-training"),
    (f"{DLC}/pytorch-training:2.1.0-cpu-py310-ubuntu20.04-sagemaker", "pytorch-training"),
    ("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", "xgboost"),
    ("localhost:5000/sagemaker-xgboost:1.7-1", "sagemaker-xgboost"),
    ("public.ecr.aws/sagemaker/sagemaker-scikit-learn", "sagemaker-scikit-learn"),
    (f"{ECR}/sagemaker-xgboost@sha256:" + "a" * 64, "sagemaker-xgboost"),
    ("sagemaker-xgboost", "sagemaker-xgboost"),
    (f"{ECR.replace('us-east-1', 'cn-north-1')}.cn/Sagemaker-XGBoost:1.5-1", "sagemaker-xgboost"),
])
def test_parse_repository_any_host_tag_or_digest_returns_name(uri: str, repository: str) -> None:
    assert parse_repository(uri) == repository


def test_resolve_xgboost_without_program_is_builtin() -> None:
    resolved = resolve_training_image(f"{ECR}/sagemaker-xgboost:1.7-1", None, {"num_round": "10"}, None, None)
    assert resolved.kind == "builtin"
    assert resolved.command == [sys.executable, "-m", "opensage.algorithms.xgboost.train"]
    assert resolved.algorithm == "xgboost"
    assert resolved.framework is None
    names = {d["Name"] for d in resolved.metric_definitions}
    assert "validation:rmse" in names
    assert all("#011" in d["Regex"] for d in resolved.metric_definitions)


def test_resolve_legacy_xgboost_image_is_builtin() -> None:
    resolved = resolve_training_image("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", None, {},
                                      None, None)
    assert resolved.kind == "builtin"
    assert resolved.repository == "xgboost"


@pytest.mark.parametrize(("uri", "hps", "framework"), [
    (f"{ECR}/sagemaker-xgboost:1.7-1", {"sagemaker_program": '"train.py"'}, "xgboost"),
    (f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", {"sagemaker_program": '"train.py"'}, "sklearn"),
    (f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", {}, "sklearn"),
    (f"{DLC}/pytorch-training:2.1-cpu-py310", {"sagemaker_program": '"train.py"'}, "pytorch"),
    (f"{DLC}/pytorch-training:2.1.0-gpu-py310-cu121-ubuntu20.04-sagemaker", {}, "pytorch"),
])
def test_resolve_framework_image_is_script_mode(uri: str, hps: dict[str, str], framework: str) -> None:
    resolved = resolve_training_image(uri, None, hps, None, None)
    assert resolved.kind == "script"
    assert resolved.framework == framework
    assert resolved.command == [sys.executable, "-m", "opensage.frameworks.training"]
    assert resolved.metric_definitions == []


def test_resolve_sdk3_entrypoint_on_framework_image_is_command_verbatim() -> None:
    resolved = resolve_training_image(f"{DLC}/pytorch-training:2.1-cpu-py310", None, {"lr": "0.1"},
                                      V3_ENTRYPOINT, V3_ARGUMENTS)
    assert resolved.kind == "command"
    assert resolved.framework == "pytorch"
    assert resolved.container_command == V3_ENTRYPOINT + V3_ARGUMENTS
    assert resolved.command == [sys.executable, "-m", "opensage.frameworks.training", "--exec", "--",
                                *V3_ENTRYPOINT, *V3_ARGUMENTS]


def test_resolve_entrypoint_on_xgboost_image_is_command_not_builtin() -> None:
    resolved = resolve_training_image(f"{ECR}/sagemaker-xgboost:1.7-1", None, {}, ["python3", "x.py"], None)
    assert resolved.kind == "command"
    assert resolved.container_command == ["python3", "x.py"]


def test_resolve_arguments_without_entrypoint_run_as_command_except_train() -> None:
    uri = f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3"
    assert resolve_training_image(uri, None, {}, None, ["train"]).kind == "script"
    resolved = resolve_training_image(uri, None, {}, None, ["python3", "job.py"])
    assert resolved.kind == "command"
    assert resolved.container_command == ["python3", "job.py"]


@pytest.mark.parametrize("uri", [
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-custom-image:latest",
    "ubuntu:22.04",
    f"{DLC}/pytorch-inference:2.1-cpu-py310",
])
def test_resolve_unknown_image_raises_naming_supported_images(uri: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_training_image(uri, None, {}, None, None)
    message = str(info.value)
    assert uri in message
    assert "no container engine" in message
    assert "sagemaker-scikit-learn" in message and "sagemaker-xgboost" in message


def test_resolve_entrypoint_on_unknown_image_raises() -> None:
    with pytest.raises(ValueError, match="ContainerEntrypoint is only supported with framework images"):
        resolve_training_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1", None, {},
                               V3_ENTRYPOINT, V3_ARGUMENTS)


def test_resolve_algorithm_name_builtin_and_arn_resolve() -> None:
    assert resolve_training_image(None, "xgboost", {}, None, None).kind == "builtin"
    arn = "arn:aws:sagemaker:us-east-1:123456789012:algorithm/sagemaker-xgboost"
    assert resolve_training_image(None, arn, {}, None, None).algorithm == "xgboost"


def test_resolve_algorithm_name_not_builtin_raises() -> None:
    with pytest.raises(ValueError, match="AlgorithmName 'my-marketplace-algo' is not a built-in"):
        resolve_training_image(None, "my-marketplace-algo", {}, None, None)


def test_resolve_neither_image_nor_algorithm_raises() -> None:
    with pytest.raises(ValueError, match="TrainingImage or an AlgorithmName"):
        resolve_training_image(None, None, {}, None, None)
    with pytest.raises(ValueError, match="TrainingImage is empty"):
        resolve_training_image("  ", None, {}, None, None)


# ------------------------------------------------------------------------------------------ environments


@pytest.mark.parametrize(("uri", "version"), [
    (f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", "1.2-1"),
    (f"{ECR}/sagemaker-xgboost:0.90-2-cpu-py3", "0.90-2"),
    (f"{ECR}/sagemaker-xgboost:1.7-1", "1.7-1"),
    (f"{DLC}/pytorch-training:2.1.0-gpu-py310-cu121-ubuntu20.04-sagemaker", "2.1.0"),
    ("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", ""),
    (f"{ECR}/sagemaker-xgboost:latest", ""),
    (f"{ECR}/sagemaker-xgboost@sha256:" + "a" * 64, ""),
])
def test_image_version_tag_returns_framework_version(uri: str, version: str) -> None:
    assert image_version(uri) == version


def _pins(spec) -> dict[str, str]:
    return dict(line.split("==", 1) for line in spec.requirements)


def test_environment_for_image_sklearn_tag_pins_its_scikit_learn_and_toolkits() -> None:
    spec = environment_for_image(f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", "script")
    pins = _pins(spec)
    assert pins["scikit-learn"].startswith("1.2.")
    assert {"sagemaker-training", "sagemaker-containers", "sagemaker-inference", "boto3"} <= set(pins)
    assert spec.patch_sagemaker_containers and "sagemaker_containers" in spec.imports
    assert any("pandas 1.5.3" in note for note in spec.notes)  # the image's pandas 1.1.3 has no 3.11 wheel


@pytest.mark.parametrize(("tag", "xgboost"), [("0.90-2-cpu-py3", "0.90"), ("1.0-1-cpu-py3", "1.0.0"),
                                              ("1.7-1", "1.7.4")])
def test_environment_for_image_xgboost_script_mode_pins_the_tag_version(tag: str, xgboost: str) -> None:
    spec = environment_for_image(f"{ECR}/sagemaker-xgboost:{tag}", "script")
    assert _pins(spec)["xgboost"] == xgboost
    assert spec.image == f"sagemaker-xgboost:{tag.removesuffix('-cpu-py3')}"


def test_environment_for_image_xgboost_3_uses_cpu_only_wheel() -> None:
    assert _pins(environment_for_image(f"{ECR}/sagemaker-xgboost:3.0-5", "script"))["xgboost-cpu"] == "3.0.5"


def test_environment_for_image_builtin_xgboost_090_gets_its_environment_later_versions_the_platform() -> None:
    assert _pins(environment_for_image(f"{ECR}/sagemaker-xgboost:0.90-1-cpu-py3", "builtin"))["xgboost"] == "0.90"
    assert environment_for_image(f"{ECR}/sagemaker-xgboost:1.7-1", "builtin") is None
    assert environment_for_image("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", "builtin") is None
    assert environment_for_image(f"{ECR}/kmeans:1", "builtin") is None


def test_environment_for_image_pytorch_uses_local_cpu_torch_and_says_so() -> None:
    spec = environment_for_image(f"{DLC}/pytorch-training:2.3-cpu-py311", "script")
    assert _pins(spec)["torch"] == "2.13.0+cpu"
    assert any("torch 2.3" in note and "CPU" in note for note in spec.notes)


def test_environment_for_image_unknown_sklearn_version_uses_nearest_and_notes_it() -> None:
    spec = environment_for_image(f"{ECR}/sagemaker-scikit-learn:1.3-1-cpu-py3", "script")
    assert spec.version == "1.2-1" and any("1.3-1" in note for note in spec.notes)


def test_resolve_training_image_unknown_repository_raises_unsupported_image() -> None:
    from opensage.images import UnsupportedImage

    with pytest.raises(UnsupportedImage, match="my-own"):
        resolve_training_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own:1", None, {}, None, None)


@pytest.mark.parametrize("image", [f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", f"{ECR}/sagemaker-xgboost:1.7-1",
                                   f"{DLC}/pytorch-training:2.3-cpu-py311"])
def test_environment_for_image_toolkits_get_pkg_resources_and_the_featurizer_imports_are_checked(image) -> None:
    """sagemaker_containers.beta.framework and sagemaker_inference.model_server import pkg_resources, which
    setuptools 81 removed and uv's environments do not have at all."""
    from packaging.version import Version

    spec = environment_for_image(image, "script")
    assert Version(_pins(spec)["setuptools"]) < Version("81")
    assert "sagemaker_inference.model_server" in spec.imports
    if "pytorch" not in image:
        assert "sagemaker_containers.beta.framework" in spec.imports


@pytest.mark.parametrize("uri", [f"{DLC}/tensorflow-training:2.14-cpu-py310",
                                 f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121"])
def test_resolve_framework_image_without_environment_script_mode_fails_naming_images_with_environments(uri) -> None:
    from opensage.images import UnsupportedImage

    with pytest.raises(UnsupportedImage) as err:
        resolve_training_image(uri, None, {"sagemaker_program": '"train.py"'}, None, None)
    message = str(err.value)
    assert uri in message and "sagemaker-scikit-learn" in message and "pytorch-training" in message
    # A verbatim entrypoint (SDK @step remote functions) still runs on the platform's interpreter.
    assert resolve_training_image(uri, None, {}, ["/bin/bash"], ["-c", "true"]).kind == "command"


def test_environment_for_image_pytorch_without_local_wheel_uses_pytorch_cpu_index(monkeypatch, tmp_path) -> None:
    """On a user's machine (no /opt/wheels) the CPU torch must resolve: PyPI has no +cpu builds."""
    from opensage import images

    monkeypatch.setattr(images, "_TORCH_WHEELS", str(tmp_path))
    spec = environment_for_image(f"{DLC}/pytorch-training:2.3-cpu-py311", "script")
    assert spec.extra_index_urls == ("https://download.pytorch.org/whl/cpu",)
    assert spec.find_links == ()
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    local = environment_for_image(f"{DLC}/pytorch-training:2.3-cpu-py311", "script")
    assert local.find_links == (str(tmp_path),) and local.extra_index_urls == ()
