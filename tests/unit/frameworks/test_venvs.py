"""requirements.txt -> cached venvs layered on the platform environment (no network: local packages)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from opensage.frameworks.venvs import RequirementsError, ensure_venv, requirements_key
from tests.unit.frameworks.helpers import make_ml_root, make_sourcedir_tar, run_toolkit

# A PEP 517 backend inside the package itself, so pip needs nothing from an index to build it.
BACKEND = textwrap.dedent('''
    import base64, hashlib, os, zipfile
    NAME, VERSION, MODULE = {name!r}, {version!r}, {module!r}

    def _digest(data):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        dist = f"{{NAME}}-{{VERSION}}.dist-info"
        files = {{
            f"{{MODULE}}/__init__.py": open(os.path.join(os.path.dirname(__file__), "code.py"), "rb").read(),
            f"{{dist}}/METADATA": f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n".encode(),
            f"{{dist}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        }}
        record = "".join(f"{{p}},{{_digest(d)}},{{len(d)}}\\n" for p, d in files.items()) + f"{{dist}}/RECORD,,\\n"
        files[f"{{dist}}/RECORD"] = record.encode()
        filename = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
        with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as whl:
            for path, data in files.items():
                whl.writestr(path, data)
        return filename
''')
PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'


def make_local_package(where: Path, name: str, version: str = "1.0", module: str | None = None,
                       code: str = "VALUE = 42\n") -> Path:
    where.mkdir(parents=True)
    (where / "pyproject.toml").write_text(PYPROJECT)
    (where / "backend.py").write_text(BACKEND.format(name=name, version=version, module=module or name))
    (where / "code.py").write_text(code)
    return where


def _python(python: str, code: str) -> str:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def test_ensure_venv_installs_once_then_reuses(tmp_path: Path) -> None:
    code = tmp_path / "code"
    make_local_package(code / "localpkg", "localpkg")
    (code / "requirements.txt").write_text("./localpkg\n")
    first = ensure_venv(code / "requirements.txt", tmp_path / "cache", log=lambda _m: None)
    second = ensure_venv(code / "requirements.txt", tmp_path / "cache", log=lambda _m: None)
    assert first.created and not second.created
    assert first.python == second.python
    # The venv has the user's package and still sees the platform's (numpy is a platform dependency).
    assert _python(first.python, "import localpkg, numpy; print(localpkg.VALUE)") == "42"


def test_ensure_venv_user_requirement_wins_over_platform_package(tmp_path: Path) -> None:
    code = tmp_path / "code"
    make_local_package(code / "idna", "idna", version="99.0", code="OVERRIDDEN = True\n")
    (code / "requirements.txt").write_text("./idna\n")
    env = ensure_venv(code / "requirements.txt", tmp_path / "cache", log=lambda _m: None)
    out = json.loads(_python(env.python, "import idna, json, importlib.metadata as m; "
                                         "print(json.dumps([idna.__file__, m.version('idna')]))"))
    assert out[0].startswith(str(tmp_path / "cache")) and out[1] == "99.0"
    assert _python(env.python, "import numpy, sys; print(sys.prefix)") == str(tmp_path / "cache" / requirements_key(code / "requirements.txt"))
    import idna  # the platform's own copy is untouched
    assert not hasattr(idna, "OVERRIDDEN")


def test_ensure_venv_failed_install_raises_pip_tail_and_leaves_nothing(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("./does-not-exist\n")
    with pytest.raises(RequirementsError) as info:
        ensure_venv(code / "requirements.txt", tmp_path / "cache", log=lambda _m: None)
    assert "does-not-exist" in str(info.value) and "requirements.txt" in str(info.value)
    key = requirements_key(code / "requirements.txt")
    assert not (tmp_path / "cache" / key).exists()


def test_ensure_venv_concurrent_jobs_build_once(tmp_path: Path) -> None:
    code = tmp_path / "code"
    make_local_package(code / "localpkg", "localpkg")
    (code / "requirements.txt").write_text("./localpkg\n")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _i: ensure_venv(code / "requirements.txt", tmp_path / "cache",
                                                       log=lambda _m: None), range(2)))
    assert sorted(r.created for r in results) == [False, True]
    assert _python(results[0].python, "import localpkg; print(localpkg.VALUE)") == "42"


def test_requirements_key_changes_with_local_package_content(tmp_path: Path) -> None:
    code = tmp_path / "code"
    make_local_package(code / "localpkg", "localpkg")
    (code / "requirements.txt").write_text("./localpkg\n")
    before = requirements_key(code / "requirements.txt")
    (code / "localpkg" / "code.py").write_text("VALUE = 43\n")
    assert requirements_key(code / "requirements.txt") != before


def test_training_with_requirements_second_job_reuses_venv(tmp_path: Path) -> None:
    package = make_local_package(tmp_path / "pkgsrc" / "localpkg", "localpkg")
    files = {"train.py": "import os, localpkg\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'v'), 'w')"
                         ".write(str(localpkg.VALUE))\n",
             "requirements.txt": "./localpkg\n"}
    files.update({f"localpkg/{p.name}": p.read_text() for p in package.iterdir() if p.is_file()})
    outputs = []
    for job in ("job-a", "job-b"):
        (tmp_path / job).mkdir()
        make_sourcedir_tar(tmp_path / job / "sourcedir.tar.gz", files)
        hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": '"/opt/ml/sourcedir.tar.gz"'}
        root = make_ml_root(tmp_path / job, hps)
        result = run_toolkit(root, tmp_path / "cache")
        assert result.returncode == 0, result.stderr + result.stdout
        assert (root / "model" / "v").read_text() == "42"
        outputs.append(result.stdout)
    assert "Installing requirements.txt into a new environment" in outputs[0]
    assert "Reusing the environment" in outputs[1] and "Installing requirements" not in outputs[1]
