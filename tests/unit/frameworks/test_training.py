"""End to end: ``python -m opensage.frameworks.training`` against a temporary ml root."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from opensage.frameworks.training import entry_point_command, error_summary, validate_entry_point
from tests.unit.frameworks.helpers import make_ml_root, make_sourcedir_tar, run_toolkit

TRAIN_PY = textwrap.dedent("""
    import argparse, json, os, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--opt")
    parser.add_argument("--flag")
    parser.add_argument("-k")
    args = parser.parse_args()
    rows = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "data.csv")).read().split()
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
        f.write(json.dumps({"epochs": args.epochs, "opt": args.opt, "flag": args.flag, "k": args.k,
                            "rows": len(rows), "argv": sys.argv[1:], "hp": os.environ["SM_HP_OPT"],
                            "cwd": os.getcwd(), "job": os.environ["SAGEMAKER_JOB_NAME"]}))
    print("epoch 3 loss=0.25")
""")


def _job(tmp_path: Path, program: str, files: dict[str, str], extra_hps: dict[str, str] | None = None) -> Path:
    # A local submit directory must be inside the job's /opt/ml (here: its ml root).
    (tmp_path / "ml" / "input" / "data" / "code").mkdir(parents=True, exist_ok=True)
    tar = make_sourcedir_tar(tmp_path / "ml" / "input" / "data" / "code" / "sourcedir.tar.gz", files)
    hps = {"epochs": "3", "opt": '"adam"', "flag": "true", "k": '"v"',
           "sagemaker_program": json.dumps(program), "sagemaker_submit_directory": json.dumps(str(tar)),
           "sagemaker_job_name": '"job-1"', "sagemaker_container_log_level": "20", **(extra_hps or {})}
    return make_ml_root(tmp_path / "ml", hps, {"train": {"data.csv": "1,2\n3,4\n5,6\n"}})


def test_training_python_script_gets_channels_args_and_writes_model(tmp_path: Path) -> None:
    root = _job(tmp_path, "train.py", {"train.py": TRAIN_PY})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    model = json.loads((root / "model" / "model.txt").read_text())
    assert model["argv"] == ["--epochs", "3", "--flag", "True", "-k", "v", "--opt", "adam"]
    assert (model["epochs"], model["opt"], model["rows"], model["hp"]) == (3, "adam", 3, "adam")
    assert model["cwd"] == str(root / "code") and model["job"] == "job-1"
    assert "epoch 3 loss=0.25" in result.stdout
    assert not (root / "output" / "failure").exists()


def test_training_script_raises_failure_file_has_exception_line(tmp_path: Path) -> None:
    script = "import sys\nprint('starting')\ndef f():\n    raise ValueError('bad input')\nf()\n"
    root = _job(tmp_path, "train.py", {"train.py": script})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("ExecuteUserScriptError:\nExitCode 1\n")
    assert 'ErrorMessage "ValueError: bad input"' in failure
    assert "train.py --epochs 3" in failure
    assert "ValueError: bad input" in result.stderr  # the traceback was streamed through too
    assert "Traceback (most recent call last)" in result.stderr


def test_training_exit_code_and_user_failure_file_kept(tmp_path: Path) -> None:
    script = ("import os, sys\nopen(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w')"
              ".write('my own reason')\nsys.exit(3)\n")
    root = _job(tmp_path, "train.py", {"train.py": script})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 3
    assert (root / "output" / "failure").read_text() == "my own reason"


def test_training_shell_entry_point_runs_with_args(tmp_path: Path) -> None:
    script = '#!/bin/sh\necho "$@" > "$SM_MODEL_DIR/args.txt"\n'
    root = _job(tmp_path, "train.sh", {"train.sh": script})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert (root / "model" / "args.txt").read_text().strip() == "--epochs 3 --flag True -k v --opt adam"


def test_training_package_with_setup_py_runs_as_module(tmp_path: Path) -> None:
    files = {"setup.py": "from setuptools import setup\nsetup(name='t')\n",
             "trainer/__init__.py": "", "trainer/task.py":
             "import os, sys\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'm'), 'w').write(__name__)\n"}
    root = _job(tmp_path, "trainer/task.py", files)
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert (root / "model" / "m").read_text() == "__main__"


def test_training_local_submit_directory_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "ml" / "input" / "data" / "src"
    src.mkdir(parents=True)
    (src / "train.py").write_text(TRAIN_PY)
    root = _job(tmp_path, "train.py", {"unused.py": ""},
                {"sagemaker_submit_directory": json.dumps("file:///opt/ml/input/data/src")})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert (root / "model" / "model.txt").exists()


def test_training_missing_entry_point_fails_naming_files(tmp_path: Path) -> None:
    root = _job(tmp_path, "trian.py", {"train.py": TRAIN_PY})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert "entry point 'trian.py' is not in the source directory" in failure and "train.py" in failure


def test_training_missing_submit_directory_fails_clearly(tmp_path: Path) -> None:
    root = _job(tmp_path, "train.py", {"train.py": TRAIN_PY},
                {"sagemaker_submit_directory": json.dumps(str(tmp_path / "nope.tar.gz"))})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 1
    assert "sagemaker_submit_directory" in (root / "output" / "failure").read_text()


def test_training_no_program_fails_naming_hyperparameter(tmp_path: Path) -> None:
    root = make_ml_root(tmp_path / "ml", {"epochs": "3"})
    result = run_toolkit(root, tmp_path / "cache")
    assert result.returncode == 1
    assert "sagemaker_program" in (root / "output" / "failure").read_text()


def test_training_s3_submit_directory_downloaded_through_endpoint(tmp_path: Path) -> None:
    """A tiny S3 endpoint (moto's server is not a dependency): serve GetObject from a local dict."""
    import http.server
    import threading

    tar = make_sourcedir_tar(tmp_path / "sourcedir.tar.gz", {"train.py": TRAIN_PY}).read_bytes()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, body: bool) -> None:
            seen.append(f"{self.command} {self.path}")
            if self.path.split("?")[0] != "/bucket/job/source/sourcedir.tar.gz":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(tar)))
            self.send_header("ETag", '"x"')
            self.end_headers()
            if body:
                self.wfile.write(tar)

        def do_HEAD(self) -> None:  # noqa: N802
            self._reply(False)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(True)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = _job(tmp_path, "train.py", {"x": ""}, {
            "sagemaker_submit_directory": '"s3://bucket/job/source/sourcedir.tar.gz"'})
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_toolkit(root, tmp_path / "cache", S3_ENDPOINT_URL=url, AWS_ENDPOINT_URL_S3=url,
                             AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert (root / "model" / "model.txt").exists()
    assert any("/bucket/job/source/sourcedir.tar.gz" in line for line in seen)


@pytest.mark.parametrize("name", ["", "-c", "/etc/passwd", "../x.py", "a b.py", "x/./y.py"])
def test_validate_entry_point_unsafe_names_rejected(name: str) -> None:
    with pytest.raises(Exception, match="entry point"):
        validate_entry_point(name)


def test_entry_point_command_kinds(tmp_path: Path) -> None:
    assert entry_point_command(tmp_path, "t.py", "py", ["--a", "1"]) == ["py", "--", "t.py", "--a", "1"]
    assert entry_point_command(tmp_path, "t.sh", "py", ["--a", "x y"]) == ["/bin/sh", "-c", "./t.sh --a 'x y'"]
    (tmp_path / "setup.py").write_text("")
    assert entry_point_command(tmp_path, "pkg/t.py", "py", []) == ["py", "-m", "pkg.t"]


def test_error_summary_traceback_gives_exception_lines() -> None:
    stderr = ("warning: something\nTraceback (most recent call last):\n  File \"t.py\", line 3, in <module>\n"
              "    f()\nKeyError: 'label'\n")
    assert error_summary(stderr) == "KeyError: 'label'"
    assert error_summary("line1\n\nlast words\n") == "line1\nlast words"
    assert error_summary("x" * 2000, limit=50).startswith("...") and len(error_summary("x" * 2000, 50)) == 50


def test_fetch_source_https_submit_directory_downloads_the_s3_object(monkeypatch, tmp_path):
    """SageMaker accepts https:// S3 object URLs for sagemaker_submit_directory as well as s3:// URIs."""
    import io
    import tarfile

    from opensage.frameworks import training

    def fake_download(uri, dest):
        seen.append(uri)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("entry.py")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"#\n"))
        dest.write_bytes(buf.getvalue())

    seen: list[str] = []
    monkeypatch.setattr(training, "s3_download", fake_download)
    training.fetch_source("https://bucket1.s3.us-east-1.amazonaws.com/src/sourcedir.tar.gz", tmp_path / "ml" / "code",
                          tmp_path / "ml")
    assert seen == ["s3://bucket1/src/sourcedir.tar.gz"]
    assert (tmp_path / "ml" / "code" / "entry.py").read_bytes() == b"#\n"
