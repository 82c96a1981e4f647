"""Framework environments (opensage.environments): the platform fast path, a uv build from local wheels,
one build for concurrent callers, and the offline FailureReason naming `opensage pull`."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from opensage import environments
from opensage.environments import EnvironmentError, EnvironmentSpec, ensure_environment, unsatisfied_pins


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, name: str, version: str, code: str = "VALUE = 42\n") -> Path:
    """A pure-Python wheel written by hand: uv installs it with no index."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},{_digest(d)},{len(d)}\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, data in files.items():
            whl.writestr(member, data)
    return path


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("OPENSAGE_OFFLINE", "1")  # uv --offline: only the local wheels below
    monkeypatch.delenv(environments.POLICY_ENV, raising=False)


def tiny_spec(wheels: Path, *requirements: str) -> EnvironmentSpec:
    return EnvironmentSpec("sagemaker-test-image", "1.0-1", requirements,
                           imports=("opensagetiny", "opensage.images"), find_links=(str(wheels),))


def test_ensure_environment_platform_satisfies_pins_returns_platform_interpreter(tmp_path, offline):
    import sys

    spec = EnvironmentSpec("sagemaker-test-image", "1", ("boto3==1.44.5", "botocore"))
    assert unsatisfied_pins(spec) == []
    env = ensure_environment(spec, tmp_path)
    assert env.python == sys.executable and env.directory is None
    assert not tmp_path.joinpath("sagemaker-test-image-1").exists()


def test_ensure_environment_missing_pin_builds_cached_env_with_platform_package(tmp_path, offline):
    make_wheel(tmp_path / "wheels", "opensagetiny", "1.0")
    spec = tiny_spec(tmp_path / "wheels", "opensagetiny==1.0")
    assert unsatisfied_pins(spec) == ["opensagetiny==1.0"]
    lines: list[str] = []
    built = ensure_environment(spec, tmp_path / "envs", log=lines.append)
    assert built.built and built.directory is not None
    assert any("Preparing the environment for image sagemaker-test-image:1.0-1" in line for line in lines)
    probe = subprocess.run(
        [built.python, "-c", "import opensagetiny, opensage, sys; print(opensagetiny.VALUE, opensage.__file__); "
                             "import numpy"], capture_output=True, text=True)
    # Its own pins and the platform's opensage package, nothing else of the platform (no numpy here).
    assert probe.stdout.split()[0] == "42"
    assert "No module named 'numpy'" in probe.stderr
    mode = os.stat(built.directory / "bin" / "python").st_mode
    assert oct(os.stat(built.directory).st_mode & 0o777) == "0o755" and mode & 0o005
    again = ensure_environment(spec, tmp_path / "envs", log=lines.append)
    assert not again.built and again.python == built.python


def test_ensure_environment_concurrent_callers_build_once(tmp_path, offline):
    make_wheel(tmp_path / "wheels", "opensagetiny", "2.0")
    spec = tiny_spec(tmp_path / "wheels", "opensagetiny==2.0")
    builds: list[str] = []
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(
            lambda _: ensure_environment(spec, tmp_path / "envs", log=lambda _l: None,
                                         on_build=lambda: builds.append("x")), range(3)))
    assert len(builds) == 1
    assert sum(r.built for r in results) == 1
    assert len({r.python for r in results}) == 1


def test_ensure_environment_offline_without_cache_fails_naming_pull_command(tmp_path, offline):
    spec = tiny_spec(tmp_path / "wheels-none", "opensagetiny==9.9")
    with pytest.raises(EnvironmentError) as e:
        ensure_environment(spec, tmp_path / "envs", log=lambda _l: None)
    text = str(e.value)
    assert text.startswith("ClientError: the environment for image sagemaker-test-image:1.0-1 is not cached")
    assert "`opensage pull sagemaker-test-image:1.0-1`" in text[:400]
    assert not any(p.is_dir() for p in (tmp_path / "envs").iterdir())  # the half-built one is gone


def test_ensure_environment_platform_policy_never_builds(tmp_path, monkeypatch):
    monkeypatch.setenv(environments.POLICY_ENV, "platform")
    spec = tiny_spec(tmp_path, "opensagetiny==3.0")
    assert ensure_environment(spec, tmp_path / "envs").directory is None


def test_training_job_environment_builtin_image_sets_image_version_for_the_algorithm(tmp_path):
    from types import SimpleNamespace

    from opensage.runner.training import AGENT_IMAGE_ENV, AGENT_IMAGE_KIND_ENV, _image_environment

    settings = SimpleNamespace(home=tmp_path)
    req = {"AlgorithmSpecification": {
        "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:0.90-2-cpu-py3"}}
    env = _image_environment(req, SimpleNamespace(kind="builtin"), settings)
    assert env["OPENSAGE_IMAGE_VERSION"] == "0.90-2"
    assert env[AGENT_IMAGE_KIND_ENV] == "builtin" and env[AGENT_IMAGE_ENV].endswith(":0.90-2-cpu-py3")
    latest = _image_environment({"AlgorithmSpecification": {"TrainingImage": "x/sagemaker-xgboost:latest"}},
                                SimpleNamespace(kind="builtin"), settings)
    assert latest["OPENSAGE_IMAGE_VERSION"] == ""
    script = _image_environment(req, SimpleNamespace(kind="script"), settings)
    assert "OPENSAGE_IMAGE_VERSION" not in script


def test_plan_model_server_builtin_image_carries_version_and_image(tmp_path):
    from opensage.serving.plan import SERVING_IMAGE_ENV, SERVING_IMAGE_KIND_ENV, plan_model_server

    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    plan = plan_model_server({"PrimaryContainer": {"Image": image, "ModelDataUrl": "s3://b/m.tar.gz"}},
                             lambda _url: tmp_path, tmp_path)
    assert plan.env["OPENSAGE_IMAGE_VERSION"] == "1.7-1"
    assert plan.env[SERVING_IMAGE_ENV] == image and plan.env[SERVING_IMAGE_KIND_ENV] == "builtin"


def test_image_environment_python_platform_satisfied_image_keeps_platform(tmp_path):
    from opensage.serving.replicas import image_environment_python

    env = {"OPENSAGE_SERVING_IMAGE": "x/sagemaker-xgboost:1.7-1", "OPENSAGE_SERVING_IMAGE_KIND": "builtin"}
    assert image_environment_python(env, tmp_path / "log") is None
    assert "OPENSAGE_SERVING_IMAGE" not in env and "OPENSAGE_ENV_DIR" not in env


def test_wheels_to_build_names_the_sdist_only_pins_and_their_sdist_only_dependencies(tmp_path):
    from opensage.environments import EnvironmentSpec, _has_wheel

    spec = EnvironmentSpec("sagemaker-scikit-learn", "1.2-1",
                           ("scikit-learn==1.2.2", "sagemaker-training==4.8.0", "pyspark==3.5.7"))
    assert spec.wheels_to_build() == ("sagemaker-training==4.8.0", "pyspark==3.5.7", "inotify-simple==1.2.1")
    assert EnvironmentSpec("x", "1", ("numpy==1.26.4",)).wheels_to_build() == ()
    (tmp_path / "sagemaker_training-4.8.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert _has_wheel(tmp_path, "sagemaker-training==4.8.0")
    assert not _has_wheel(tmp_path, "sagemaker-training==5.1.4")
    assert not _has_wheel(tmp_path, "pyspark==3.5.7")


def test_ensure_environment_extra_index_serves_a_local_version_pin(tmp_path, offline):
    """A pin only an extra index has (PyTorch's ``+cpu`` builds: download.pytorch.org, not PyPI) installs from it."""
    wheel = make_wheel(tmp_path / "build", "opensagetiny", "1.0+cpu")
    project = tmp_path / "index" / "opensagetiny"
    project.mkdir(parents=True)
    (project / wheel.name).write_bytes(wheel.read_bytes())
    (project / "index.html").write_text(f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>')
    spec = EnvironmentSpec("sagemaker-test-image", "1.0-cpu", ("opensagetiny==1.0+cpu",), imports=("opensagetiny",),
                           extra_index_urls=((tmp_path / "index").as_uri(),))
    built = ensure_environment(spec, tmp_path / "envs", log=lambda line: None)
    probe = subprocess.run([built.python, "-c", "import opensagetiny; print(opensagetiny.VALUE)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "42", probe.stderr
