"""Per-requirements virtual environments for script-mode jobs.

A job whose source directory has ``requirements.txt`` runs in a venv cached under
``$OPENSAGE_VENV_CACHE`` (default ``~/.opensage/venvs``), keyed by a hash of the requirements (and of any
local files / directories they name, and of the platform interpreter). The venv is layered on the
platform environment: a ``.pth`` file in its site-packages adds the platform's site-packages *after* its
own, so the user's requirements win over platform packages and everything else (numpy, boto3, ...) is
still importable. Packages are installed with the platform's pip (``pip --python <venv python>``), so the
venv needs no pip of its own. pip never uninstalls platform packages here: a pinned version that
differs from the platform's is installed into the venv ("outside environment" is left alone).

Creation is serialized per key with ``flock`` and published by a ``.complete`` marker written last; a
half-built venv (crash, failed install) is removed, and a failed install raises ``RequirementsError``
with pip's output tail.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import site
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "OPENSAGE_VENV_CACHE"
COMPLETE_MARKER = ".complete"
PTH_NAME = "_opensage_platform.pth"
MAX_HASHED_BYTES = 64 * 1024 * 1024
PIP_TAIL_LINES = 40


class RequirementsError(RuntimeError):
    """requirements.txt could not be installed; the message ends with pip's output tail."""


@dataclass(frozen=True)
class RequirementsEnv:
    python: str
    venv_dir: Path | None
    created: bool  # False when an existing cached venv was reused (or there were no requirements)


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".opensage" / "venvs"


def python_for(code_dir: Path, log=print) -> RequirementsEnv:
    """The interpreter to run the user's code with: a cached venv when ``code_dir/requirements.txt``
    exists, else the platform interpreter."""
    requirements = code_dir / "requirements.txt"
    if not requirements.is_file():
        return RequirementsEnv(sys.executable, None, False)
    return ensure_venv(requirements, cache_root(), log=log)


def requirements_key(requirements: Path) -> str:
    """Hash of the requirements, the local paths they name, and the platform interpreter."""
    digest = hashlib.sha256()
    # sys.prefix too: an image's environment (opensage.environments) shares the platform's interpreter binary
    # but not its packages, and a venv is layered on the one it was built from.
    digest.update(f"{sys.version}\0{os.path.realpath(sys.executable)}\0{sys.prefix}\0".encode())
    text = requirements.read_text()
    digest.update(text.encode())
    base = requirements.parent
    for local in sorted(_local_references(text, base)):
        _hash_path(digest, local, base)
    return digest.hexdigest()[:24]


def ensure_venv(requirements: Path, root: Path, log=print) -> RequirementsEnv:
    """Return a venv with ``requirements`` installed, building it once per key (safe across processes)."""
    key = requirements_key(requirements)
    venv = root / key
    if _is_complete(venv):
        log(f"Reusing the environment for requirements.txt at {venv}")
        return RequirementsEnv(str(venv_python(venv)), venv, False)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{key}.lock"):
        if _is_complete(venv):
            log(f"Reusing the environment for requirements.txt at {venv} (built by another job)")
            return RequirementsEnv(str(venv_python(venv)), venv, False)
        if venv.exists():
            shutil.rmtree(venv)  # left half-built by a crash
        try:
            _build(venv, requirements, log)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
    return RequirementsEnv(str(venv_python(venv)), venv, True)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def platform_site_dirs() -> list[str]:
    """The platform interpreter's site-packages directories (what the venv must still see)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _is_complete(venv: Path) -> bool:
    return (venv / COMPLETE_MARKER).is_file() and venv_python(venv).exists()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if missing) for the block: one builder per venv across processes.

    Read-only is enough for flock: a lock file another job user created (0644) still works."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _build(venv: Path, requirements: Path, log) -> None:
    started = time.monotonic()
    log(f"Installing requirements.txt into a new environment at {venv}")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "create the virtual environment")
    _layer_on_platform(venv)
    _run([sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "install",
          "--disable-pip-version-check", "--no-input", "-r", str(requirements)],
         f"install {requirements.name}", cwd=requirements.parent, stream=True)
    marker = venv / COMPLETE_MARKER
    marker.with_suffix(".tmp").write_text(requirements.read_text())
    os.replace(marker.with_suffix(".tmp"), marker)
    log(f"Installed requirements.txt in {time.monotonic() - started:.1f} s")


def _layer_on_platform(venv: Path) -> None:
    """Add the platform site-packages after the venv's own (``addsitedir`` also runs their .pth files)."""
    out = subprocess.run([str(venv_python(venv)), "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True)
    venv_site = Path(out.stdout.strip())
    venv_site.mkdir(parents=True, exist_ok=True)
    dirs = [d for d in platform_site_dirs() if Path(d).resolve() != venv_site.resolve()]
    (venv_site / PTH_NAME).write_text(f"import site; list(map(site.addsitedir, {dirs!r}))\n")
    for name in ("pip", "pip3"):  # the platform's pip, run by the venv's python, installs into the venv
        shim = venv / "bin" / name
        shim.write_text(f'#!/bin/sh\nexec "{venv_python(venv)}" -m pip "$@"\n')
        shim.chmod(0o755)


def _run(cmd: list[str], what: str, cwd: Path | None = None, stream: bool = False) -> None:
    """Run a command; stream its output (if asked) and keep the tail for the error message."""
    tail: deque[str] = deque(maxlen=PIP_TAIL_LINES)
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        if stream:
            sys.stdout.write(line)
            sys.stdout.flush()
    code = proc.wait()
    if code != 0:
        raise RequirementsError(
            f"InstallRequirementsError: could not {what} (exit code {code}). Fix requirements.txt in your "
            f"source directory.\nCommand: {' '.join(cmd)}\n" + "\n".join(tail))


def _local_references(text: str, base: Path) -> Iterator[Path]:
    """Local files / directories a requirements file names (``./pkg``, ``-r other.txt``, ``-e ../x``)."""
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        for token in line.split():
            token = token.removeprefix("file://")
            if token.startswith("-") or not token:
                continue
            candidate = (base / token) if not os.path.isabs(token) else Path(token)
            if ("/" in token or token.endswith((".txt", ".whl", ".tar.gz", ".zip"))) and candidate.exists():
                yield candidate


def _hash_path(digest: hashlib._Hash, path: Path, base: Path) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    budget = MAX_HASHED_BYTES
    for file in files:
        if "__pycache__" in file.parts or "build" in file.parts or ".egg-info" in str(file):
            continue
        digest.update(str(file.relative_to(base) if file.is_relative_to(base) else file).encode())
        data = file.read_bytes()[:budget]
        budget -= len(data)
        digest.update(hashlib.sha256(data).digest())
