"""Script mode: ``python -m opensage.frameworks.training`` does what the sagemaker-training toolkit does in a
framework image (sagemaker-scikit-learn, pytorch-training, sagemaker-xgboost with a program, ...).

1. read ``input/config/*.json`` (``toolkit_env``); the ml root is ``$SAGEMAKER_BASE_DIR`` or ``/opt/ml``;
2. fetch ``sagemaker_submit_directory`` (``s3://.../sourcedir.tar.gz`` through the job's S3 endpoint, a
   local directory or a tarball) into ``<ml root>/code`` unless it already holds code;
3. ``requirements.txt`` -> a cached venv layered on the platform (``venvs``);
4. run the entry point (``SAGEMAKER_PROGRAM`` env or ``sagemaker_program``): ``*.py`` as
   ``python -- script args``, ``*.sh`` via ``/bin/sh -c ./script args``, a source dir with ``setup.py`` as
   ``python -m module args``; with the toolkit's ``SM_*`` environment and CLI arguments;
5. stream the child's output; on failure write ``output/failure`` (unless the user did) naming the
   command, the exit code and the tail of stderr (the exception line of a traceback), and exit with the
   child's code.

``python -m opensage.frameworks.training --exec -- <argv...>`` runs ``argv`` verbatim instead (the
``command`` image kind: ContainerEntrypoint + ContainerArguments, e.g. SDK v3 ModelTrainer's
``sm_train.sh``) with the same environment, PATH and failure handling.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import traceback
from collections import deque
from pathlib import Path

from opensage.frameworks import distributed, venvs
from opensage.frameworks.toolkit_env import ToolkitEnvironment, load_environment, ml_root

FAILURE_FILE_LIMIT = 1024
STDERR_TAIL_BYTES = 64 * 1024
ERROR_MESSAGE_CHARS = 700
_SAFE_ENTRY_POINT = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._+-]*(/[A-Za-z0-9._+-]+)*$")
_TRACEBACK_HEADER = "Traceback (most recent call last):"


class ClientError(Exception):
    """A problem in the job's configuration or code that the user must fix (the toolkit's ClientError)."""


class ExecuteUserScriptError(ClientError):
    def __init__(self, cmd: list[str], exit_code: int, stderr_tail: str, info: str | None = None):
        self.cmd, self.exit_code, self.stderr_tail, self.info = cmd, exit_code, stderr_tail, info
        super().__init__(self._message())

    def _message(self) -> str:
        lines = [f"{type(self).__name__}:", f"ExitCode {self.exit_code}",
                 f'ErrorMessage "{error_summary(self.stderr_tail)}"']
        if self.info:
            lines.append(f'ExtraInfo "{self.info}"')
        lines.append(f'Command "{shlex.join(self.cmd)}"')
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- errors
def error_summary(stderr_tail: str, limit: int = ERROR_MESSAGE_CHARS) -> str:
    """The actionable part of a failed process's stderr: a traceback's exception (last lines), else the
    last non-empty lines, trimmed from the front to ``limit`` characters."""
    lines = [line.rstrip() for line in stderr_tail.splitlines() if line.strip()]
    if _TRACEBACK_HEADER in lines:
        start = len(lines) - 1 - lines[::-1].index(_TRACEBACK_HEADER)
        body = lines[start + 1:]
        # Frames are indented ("  File ...", "    code"); the exception text follows the last frame.
        last_frame = max((i for i, line in enumerate(body) if line.startswith(" ")), default=-1)
        exception = body[last_frame + 1:]
        if exception:
            lines = exception
    text = "\n".join(dict.fromkeys(lines[-12:]))
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def write_failure(root: Path, message: str) -> None:
    """``output/failure`` unless the user (or a driver) already wrote one."""
    path = root / "output" / "failure"
    if path.exists() and path.stat().st_size > 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message)


# -------------------------------------------------------------------------------------- source code
def validate_entry_point(name: str | None) -> str:
    if not name:
        raise ClientError(
            "No training entry point: set the 'sagemaker_program' hyperparameter (entry_point= in the "
            "SageMaker SDK) or the SAGEMAKER_PROGRAM environment variable to a script in your source "
            "directory, e.g. 'train.py'.")
    if not _SAFE_ENTRY_POINT.match(name) or "/../" in f"/{name}/" or "/./" in f"/{name}/":
        raise ClientError(
            f"The training entry point {name!r} is not a plain relative path inside the source directory: "
            f"use only letters, digits, '.', '_', '+', '-' and '/', not starting with '-' or '/', without "
            f"'.' or '..' segments (e.g. 'train.py' or 'bin/train.sh').")
    return name


def container_path(uri: str, root: Path) -> Path:
    """A local ``sagemaker_submit_directory`` is a path inside the container: ``/opt/ml/...`` (mapped onto
    ``root``, the job's ml root) or a path under ``root`` itself. A path elsewhere on the host is refused:
    the code that reads it may run with more rights than the job (a model server, or an agent as root)."""
    root_real = os.path.realpath(root)
    if uri == "/opt/ml" or uri.startswith("/opt/ml/"):
        candidate = os.path.join(root_real, uri[len("/opt/ml"):].lstrip("/"))
    else:
        candidate = uri
    real = os.path.realpath(candidate)
    if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
        raise ClientError(
            f"sagemaker_submit_directory '{uri}' is a local path outside the job's /opt/ml: give the s3:// URI "
            f"of a sourcedir.tar.gz (the SDK uploads source_dir there) or a path under /opt/ml.")
    return Path(real)


def fetch_source(uri: str, code_dir: Path, root: Path | None = None) -> None:
    """Put ``sagemaker_submit_directory`` into ``code_dir`` (left alone if it already holds code).

    ``root``: the directory local paths must stay inside (the job's ml root; default ``code_dir``'s parent).
    """
    code_dir.mkdir(parents=True, exist_ok=True)
    if any(code_dir.iterdir()):
        print(f"Source directory {code_dir} is not empty; using the code already there.", flush=True)
        return
    uri = uri.removeprefix("file://")
    if uri.startswith("https://"):  # an S3 object URL, as SageMaker accepts them
        from opensage.objects.base import normalize_s3_url

        try:
            uri = normalize_s3_url(uri)
        except ValueError as exc:
            raise ClientError(f"sagemaker_submit_directory: {exc}") from exc
    if uri.startswith("s3://"):
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "sourcedir.tar.gz"
            s3_download(uri, archive)
            extract_tar(archive, code_dir, uri)
        return
    source = container_path(uri, root or code_dir.parent)
    if source.is_dir():
        if source.resolve() != code_dir.resolve():
            shutil.copytree(source, code_dir, dirs_exist_ok=True)
    elif source.is_file() and tarfile.is_tarfile(source):
        extract_tar(source, code_dir, uri)
    elif source.is_file():
        shutil.copy2(source, code_dir)
    else:
        raise ClientError(
            f"sagemaker_submit_directory '{uri}' does not exist: give an s3:// URI of a sourcedir.tar.gz "
            f"or a local directory / tarball (the SDK sets it from source_dir / entry_point).")


def s3_download(uri: str, dest: Path) -> None:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as BotoClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ClientError(f"sagemaker_submit_directory '{uri}' is not an s3://bucket/key URI.")
    endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get(
        "SAGEMAKER_REGION") or None
    from opensage.objects.s3 import boto3_session
    from opensage.runner.transfers import describe_s3_error, retry_transient

    # On the zygote's pre-loaded botocore data (~25 ms for the client instead of ~140 ms); one GET, no
    # transfer thread pool: a sourcedir is small.
    client = boto3_session().client("s3", endpoint_url=endpoint, region_name=region)

    def download() -> None:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(dest, "wb") as out:
            shutil.copyfileobj(body, out, 1 << 20)

    try:
        # Waits out a restart of the platform (connection refused / 503), as every transfer of a job does.
        retry_transient(download, f"download of {uri}")
    except (BotoClientError, BotoCoreError) as exc:
        raise ClientError(
            f"Could not download sagemaker_submit_directory '{uri}' (S3 endpoint {endpoint or 'default'}): "
            f"{describe_s3_error(exc, uri)}. Check that the object exists (the SDK uploads "
            f"<bucket>/<job>/source/sourcedir.tar.gz).") from exc


def extract_tar(archive: Path, dest: Path, uri: str) -> None:
    # The project's hardened extraction: tarfile's own "data" filter is bypassable on this interpreter
    # (CVE-2025-4517).
    from opensage.runner.archive import extract_tar_gz

    try:
        extract_tar_gz(archive, dest)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ClientError(f"sagemaker_submit_directory '{uri}' is not a readable, safe tar.gz archive: "
                          f"{exc}") from exc


# ------------------------------------------------------------------------------------------ running
def entry_point_command(code_dir: Path, entry: str, python: str, args: list[str]) -> list[str]:
    """The toolkit's command for an entry point (``_entry_point_type.get`` + ``ProcessRunner``)."""
    if entry.endswith(".sh"):
        return ["/bin/sh", "-c", f"./{shlex.quote(entry)} {' '.join(shlex.quote(a) for a in args)}".rstrip()]
    if (code_dir / "setup.py").exists():
        return [python, "-m", re.sub(r"\.py$", "", entry).replace("/", "."), *args]
    if entry.endswith(".py"):
        return [python, "--", entry, *args]
    return ["/bin/sh", "-c", f"./{shlex.quote(entry)} {' '.join(shlex.quote(a) for a in args)}".rstrip()]


def child_environment(env: ToolkitEnvironment, bin_dir: str) -> dict[str, str]:
    """os.environ + the toolkit's variables; ``python``/``python3``/``pip`` on PATH = the job's python.

    Unlike the toolkit (PYTHONPATH = its whole sys.path), only the code dir is prepended to PYTHONPATH so
    a requirements venv's packages win over the platform's.
    """
    child = dict(os.environ)
    child.update(env.to_env_vars())
    child.update(env.process_env_vars())
    child["PATH"] = os.pathsep.join([bin_dir, *[p for p in child.get("PATH", "").split(os.pathsep) if p]])
    python_path = [env.code_dir, *[p for p in child.get("PYTHONPATH", "").split(os.pathsep) if p]]
    child["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(python_path))
    child.setdefault("PYTHONUNBUFFERED", "TRUE")  # as the framework images set it
    job_name = env.platform_params.get("sagemaker_job_name")
    if job_name and "TRAINING_JOB_NAME" not in child:
        child["TRAINING_JOB_NAME"] = str(job_name)
    return child


def run_process(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``cmd``, stdout inherited, stderr passed through while its tail is kept. Forwards SIGTERM/SIGINT.

    Returns (exit code as a shell reports it: 128+N when killed by signal N, stderr tail)."""
    print(f"Invoking script with the following command:\n{shlex.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stderr=subprocess.PIPE)
    previous = {sig: signal.signal(sig, lambda s, _f: proc.send_signal(s))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    tail: deque[bytes] = deque()
    size = 0
    try:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        while chunk := os.read(fd, 65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            tail.append(chunk)
            size += len(chunk)
            while size - len(tail[0]) >= STDERR_TAIL_BYTES:
                size -= len(tail.popleft())
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0:
        code = 128 - code
    return code, b"".join(tail).decode("utf-8", errors="replace")


def check_exit(cmd: list[str], code: int, stderr_tail: str) -> None:
    if code == 0:
        return
    info = None
    if code == 137:
        info = "OutOfMemory: Process killed by SIGKILL (signal 9)"
    elif code > 128:
        info = f"Process killed by signal {code - 128}"
    raise ExecuteUserScriptError(cmd, code, stderr_tail, info)


def run_script_mode(env: ToolkitEnvironment) -> int:
    entry = validate_entry_point(env.user_entry_point)
    code_dir = Path(env.code_dir)
    fetch_source(env.module_dir, code_dir, Path(env.base_dir))
    if not (code_dir / entry).exists():
        present = sorted(p.name for p in code_dir.iterdir())[:20]
        raise ClientError(
            f"The entry point '{entry}' is not in the source directory (sagemaker_submit_directory "
            f"'{env.module_dir}'), which holds: {', '.join(present) or 'nothing'}. Set sagemaker_program "
            f"(entry_point=) to a file inside source_dir.")
    if entry.endswith(".sh") or not (entry.endswith(".py") or (code_dir / "setup.py").exists()):
        (code_dir / entry).chmod(0o777)  # a command entry point, as the toolkit does
    python = _job_python(code_dir)
    cmd = entry_point_command(code_dir, entry, python, env.to_cmd_args())
    child_env = child_environment(env, str(Path(python).parent))
    mode = distributed.launcher(env)  # the SDK's distribution= (see frameworks/distributed.py)
    if mode == "torchrun":
        if not entry.endswith(".py"):
            raise ClientError("torch_distributed / pytorchddp run Python entry points only (*.py), "
                              f"not '{entry}'.")
        cmd = distributed.torchrun_command(env, python, cmd)
    elif mode == "mpi":
        code, tail = distributed.run_ranks(cmd, distributed.mpi_rank_environments(env, child_env), str(code_dir))
        check_exit(cmd, code, tail)
        return 0
    code, tail = run_process(cmd, child_env, code_dir)
    check_exit(cmd, code, distributed.strip_launcher_report(tail) if mode == "torchrun" else tail)
    return 0


def run_command(env: ToolkitEnvironment, argv: list[str]) -> int:
    """The ``command`` kind: ContainerEntrypoint + ContainerArguments, verbatim."""
    if not argv:
        raise ClientError("ContainerEntrypoint is empty: give the command to run, e.g. ['/bin/bash'].")
    code_dir = Path(env.code_dir)
    code_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    requirements = _v3_requirements(Path(env.base_dir))
    if requirements is not None:
        python = venvs.ensure_venv(requirements, venvs.cache_root()).python
    code, tail = run_process(argv, child_environment(env, str(Path(python).parent)), code_dir)
    check_exit(argv, code, tail)
    return 0


def _job_python(code_dir: Path) -> str:
    try:
        return venvs.python_for(code_dir).python
    except venvs.RequirementsError as exc:
        raise ClientError(str(exc)) from exc


def _v3_requirements(root: Path) -> Path | None:
    """SDK v3 ModelTrainer's ``SourceCode.requirements`` (from ``sm_drivers/sourcecode.json``): built as a
    cached venv first, so ``sm_train.sh``'s own ``pip install -r`` finds everything satisfied there and
    never writes into the platform environment."""

    config = root / "input" / "data" / "sm_drivers" / "sourcecode.json"
    try:
        source = json.loads(config.read_text()) if config.is_file() else {}
    except ValueError:
        return None
    name = (source or {}).get("requirements")
    if not name or name == "auto":
        return None
    path = root / "input" / "data" / "code" / name
    return path if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    root = ml_root()
    try:
        env = load_environment(root)
        if argv[:1] == ["--exec"]:
            rest = argv[1:]
            return run_command(env, rest[1:] if rest[:1] == ["--"] else rest)
        if argv:
            raise ClientError(f"Unexpected arguments {argv!r}: use --exec -- <command...> or none.")
        return run_script_mode(env)
    except ExecuteUserScriptError as exc:
        return _fail(root, str(exc), exc.exit_code)
    except ClientError as exc:
        return _fail(root, str(exc), 1)
    except Exception as exc:  # the toolkit's "Framework Error"
        # The exception first: FailureReason keeps only the first 1024 characters.
        return _fail(root, f"Framework Error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", 1)


def _fail(root: Path, message: str, code: int) -> int:
    write_failure(root, message)
    print(f"Reporting training FAILURE\n{message}", file=sys.stderr, flush=True)
    return code if 0 < code < 256 else 1


if __name__ == "__main__":
    sys.exit(main())
