"""Framework environments: what stands in for an image's Python (DESIGN "Environments stand in for images").

An image tag names framework versions (``sagemaker-scikit-learn:1.2-1`` -> scikit-learn 1.2.x). Which
pinned requirement set an image gets is decided in ``opensage.images`` (``environment_for_image``); this
module builds and caches it:

* the platform's own interpreter is used directly when its installed distributions already satisfy every
  pin (``importlib.metadata``): today's fast path;
* otherwise a virtual environment ``<home>/environments/<name>-<key>`` is created on first use with uv
  (``uv venv`` + ``uv pip install``), once even when several jobs ask at the same time (``flock`` on
  ``<name>-<key>.lock``; published by a ``.complete`` marker written last; a half-built one is removed);
* the environment is *not* layered on the platform's site-packages (their numpy / pandas builds would mix
  with the pinned ones): it gets only the platform's ``opensage`` package, through a directory holding a
  link to it that a ``.pth`` file puts on ``sys.path``. What our in-job code imports (boto3 for
  ``frameworks/training.py``) is among the pins;
* every file is readable by the job users (the jobs run as uids of their own; ``runner/jobexec.py`` binds
  the directory back where the 0700 home hides it).

``EnvironmentError`` messages are FailureReasons: they name the environment and the ``opensage pull``
command that builds it (e.g. on a machine that is offline now and had no cached environment).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from opensage.frameworks.venvs import file_lock

CACHE_ENV = "OPENSAGE_ENV_CACHE"  # where environments are cached (default: <home>/environments)
POLICY_ENV = "OPENSAGE_ENVIRONMENTS"  # auto (default) | platform (never build: the platform's interpreter)
COMPLETE_MARKER = ".complete"
PTH_NAME = "_opensage_platform_package.pth"
LINK_DIR = "opensage-platform"
TOOLKITS_DIR = "toolkits"  # opensage/toolkits/<name>: stand-ins linked as top-level packages
OUTPUT_TAIL_LINES = 30

Log = Callable[[str], None]


class EnvironmentError(RuntimeError):  # noqa: A001 - ours, never confused with OSError's alias in callers
    """The environment could not be built; the message is a user-facing FailureReason."""


@dataclass(frozen=True)
class EnvironmentSpec:
    """A pinned requirement set standing in for one (image repository, version)."""

    repository: str
    version: str
    requirements: tuple[str, ...]
    # Modules that must import in the finished environment (checked before it is published).
    imports: tuple[str, ...] = ()
    # What differs from the real image (a version with no wheel for this Python, a CPU build of torch, ...).
    notes: tuple[str, ...] = ()
    patch_sagemaker_containers: bool = False
    find_links: tuple[str, ...] = field(default=())
    # More pins published only as sdists than ``SDIST_ONLY`` names (see ``wheels_to_build``).
    build_wheels: tuple[str, ...] = field(default=())
    # Stand-ins for the image's own packages that PyPI lacks (``opensage/toolkits/<name>``), importable by
    # their top-level name (``sagemaker_xgboost_container``).
    toolkits: tuple[str, ...] = field(default=())
    # Package indexes besides the default one (PyTorch's CPU builds are only on download.pytorch.org); searched
    # with uv's best-match strategy so the other pins still come from wherever they are.
    extra_index_urls: tuple[str, ...] = field(default=())

    def wheels_to_build(self) -> tuple[str, ...]:
        """Pins built into the machine's wheelhouse once (``wheelhouse``). Left to uv, each environment build
        re-downloads and rebuilds an sdist: the index sends no validators, so uv's cache keeps a new revision
        per build (56 GB of pyspark builds, ~340 of each toolkit, were seen on one machine)."""
        named = [r for r in self.requirements if _requirement_name(r) in SDIST_ONLY]
        deps = [d for r in named for d in SDIST_ONLY_DEPENDENCIES.get(_requirement_name(r), ())]
        return tuple(dict.fromkeys((*named, *deps, *self.build_wheels)))

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.version}"

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.repository}-{self.version}")

    def key(self) -> str:
        """Changes with the pins, this interpreter and the platform package location (the .pth link)."""
        digest = hashlib.sha256()
        for part in (*self.requirements, sys.version, os.path.realpath(sys.base_prefix), _platform_package(),
                     str(self.patch_sagemaker_containers), *self.toolkits):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()[:12]

    def pull_command(self) -> str:
        return f"opensage pull {self.image}"


@dataclass(frozen=True)
class Environment:
    python: str
    directory: Path | None  # None: the platform's own interpreter
    built: bool = False  # True when this call built it


def platform_environment() -> Environment:
    return Environment(sys.executable, None)


def cache_root(home: Path | None = None) -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return (home or Path(os.environ.get("OPENSAGE_HOME") or Path.home() / ".opensage")) / "environments"


def unsatisfied_pins(spec: EnvironmentSpec) -> list[str]:
    """The pins the platform's installed distributions do not satisfy (empty: use the platform)."""
    missing = []
    for line in spec.requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            missing.append(line)
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def ensure_environment(spec: EnvironmentSpec | None, root: Path, log: Log = print,
                       policy: str | None = None, on_build: Callable[[], None] | None = None) -> Environment:
    """The interpreter for ``spec``: the platform's when it satisfies the pins, else the cached environment,
    built now if it is missing (``on_build`` is called first). Raises EnvironmentError (a FailureReason)
    when it cannot be built."""
    if spec is None:
        return platform_environment()
    policy = (policy or os.environ.get(POLICY_ENV) or "auto").lower()
    if policy == "platform" or not unsatisfied_pins(spec):
        return platform_environment()
    for note in spec.notes:
        log(f"Note: image {spec.image}: {note}")
    directory = root / f"{spec.name}-{spec.key()}"
    if _is_complete(directory):
        log(f"Using the cached environment for image {spec.image} ({directory})")
        return Environment(str(_python(directory)), directory)
    _make_readable_dir(root)
    with file_lock(root / f"{directory.name}.lock"):
        if _is_complete(directory):
            log(f"Using the environment for image {spec.image}, built by another job ({directory})")
            return Environment(str(_python(directory)), directory)
        if directory.exists():
            shutil.rmtree(directory)  # left half-built by a crash
        if on_build is not None:
            on_build()
        try:
            _build(spec, directory, log)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    return Environment(str(_python(directory)), directory, built=True)


def _python(directory: Path) -> Path:
    return directory / "bin" / "python"


def _is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file() and _python(directory).exists()


def _make_readable_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentError("uv is not installed in the platform's environment (pip install uv).")


def _find_links(spec: EnvironmentSpec) -> list[str]:
    """Local wheel directories: the spec's and pip's (PIP_FIND_LINKS), which uv does not read itself."""
    links = [*spec.find_links, *os.environ.get("PIP_FIND_LINKS", "").split()]
    return [link for link in dict.fromkeys(links) if os.path.isdir(link.removeprefix("file://"))]


WHEELHOUSE_ENV = "OPENSAGE_WHEELHOUSE"
# Requirements the index has only as sdists (the images' toolkits, pyspark), and the sdist-only pins they
# bring (sagemaker-training and sagemaker-containers require inotify_simple==1.2.1).
SDIST_ONLY = frozenset({"pyspark", "sagemaker-training", "sagemaker-containers", "sagemaker-inference"})
SDIST_ONLY_DEPENDENCIES = {"sagemaker-training": ("inotify-simple==1.2.1",),
                           "sagemaker-containers": ("inotify-simple==1.2.1",)}


def _requirement_name(line: str) -> str:
    try:
        return Requirement(line).name.lower().replace("_", "-")
    except InvalidRequirement:
        return ""


def wheelhouse() -> Path:
    """Where wheels built from sdists are kept for every home on this machine (like uv's own cache)."""
    configured = os.environ.get(WHEELHOUSE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opensage" / "wheels"


def _has_wheel(house: Path, requirement: str) -> bool:
    req = Requirement(requirement)
    prefix = req.name.replace("-", "_").lower() + "-"
    for wheel in house.glob("*.whl"):
        name = wheel.name.lower()
        if name.startswith(prefix) and req.specifier.contains(name[len(prefix):].split("-")[0], prereleases=True):
            return True
    return False


def _ensure_built_wheels(spec: EnvironmentSpec, log: Log) -> list[str]:
    """The wheelhouse as a find-links directory, after building any of ``spec.build_wheels`` it lacks
    (one build per machine; pip, because uv has no "build this requirement into a directory")."""
    wanted = spec.wheels_to_build()
    if not wanted:
        return []
    house = wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    with file_lock(house / ".build.lock"):
        missing = [r for r in wanted if not _has_wheel(house, r)]
        if missing and not (os.environ.get("OPENSAGE_OFFLINE") or os.environ.get("UV_OFFLINE")):
            log(f"Building wheels once for this machine: {', '.join(missing)} (kept in {house})")
            with tempfile.TemporaryDirectory(dir=house, prefix=".build-") as tmp:
                _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", tmp, *missing],
                     spec, log, what="build the wheels of its sdist-only requirements")
                for wheel in Path(tmp).glob("*.whl"):
                    os.replace(wheel, house / wheel.name)  # complete files only: a crash leaves no half wheel
    return [str(house)]


def _build(spec: EnvironmentSpec, directory: Path, log: Log) -> None:
    started = time.monotonic()
    log(f"Preparing the environment for image {spec.image} ({len(spec.requirements)} pinned requirements) "
        f"at {directory}")
    uv = uv_binary()
    _run([uv, "venv", "--python", os.path.realpath(sys.executable), "--no-project", str(directory)], spec, log)
    # Bytecode compiled at build time: jobs run as uids that cannot write __pycache__ here (and with
    # PYTHONDONTWRITEBYTECODE nobody would), so without it every job recompiled boto3 & co. in memory
    # (~0.3 s more per start, measured).
    cmd = [uv, "pip", "install", "--python", str(_python(directory)), "--no-progress", "--compile-bytecode"]
    for link in [*_ensure_built_wheels(spec, log), *_find_links(spec)]:
        cmd += ["--find-links", link]
    for url in spec.extra_index_urls:
        cmd += ["--extra-index-url", url]
    if spec.extra_index_urls:
        cmd += ["--index-strategy", "unsafe-best-match"]
    if os.environ.get("OPENSAGE_OFFLINE") or os.environ.get("UV_OFFLINE"):
        cmd.append("--offline")
    _run([*cmd, *spec.requirements], spec, log)
    if spec.patch_sagemaker_containers:
        _patch_sagemaker_containers(directory)
    _link_platform_package(directory, spec.toolkits)
    if spec.imports:
        probe = "; ".join(f"import {m}" for m in spec.imports)
        _run([str(_python(directory)), "-c", probe], spec, log, what="import the environment's packages")
    _open_to_jobs(directory)
    marker = directory / COMPLETE_MARKER
    marker.write_text("\n".join(spec.requirements) + "\n")
    os.chmod(marker, 0o644)
    log(f"Environment for image {spec.image} ready in {time.monotonic() - started:.1f} s")


def _site_packages(directory: Path) -> Path:
    found = sorted((directory / "lib").glob("python3*/site-packages"))
    if not found:
        raise EnvironmentError(f"The environment at {directory} has no site-packages directory.")
    return found[0]


def _link_platform_package(directory: Path, toolkits: tuple[str, ...] = ()) -> None:
    """Only ``opensage`` from the platform (and the toolkit stand-ins the spec names, each under its own
    top-level name): a directory holding links to the packages, put on sys.path."""
    link_dir = directory / LINK_DIR
    link_dir.mkdir(exist_ok=True)
    package = Path(_platform_package())
    for name, target in (("opensage", package), *((t, package / TOOLKITS_DIR / t) for t in toolkits)):
        if not target.is_dir():
            raise EnvironmentError(f"The platform has no toolkit stand-in {name} ({target}).")
        link = link_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    (_site_packages(directory) / PTH_NAME).write_text(f"{link_dir}\n")


def _platform_package() -> str:
    import opensage

    return str(Path(opensage.__file__).resolve().parent)


def _patch_sagemaker_containers(directory: Path) -> None:
    """sagemaker-containers 2.8.6.post2 subclasses ``collections.Mapping`` (gone in Python 3.10); AWS's own
    newer images patch it the same way (sed to ``collections.abc.Mapping``)."""
    path = _site_packages(directory) / "sagemaker_containers" / "_mapping.py"
    if not path.is_file():
        return
    text = path.read_text()
    text = text.replace("collections.Mapping", "collections.abc.Mapping")
    text = re.sub(r"^import collections$", "import collections\nimport collections.abc", text, flags=re.M)
    path.write_text(text)
    py_compile.compile(str(path), doraise=True)


def _open_to_jobs(directory: Path) -> None:
    """Job users (uids of their own) read and execute the environment; nobody but its builder writes it."""
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                mode = os.stat(full).st_mode
                os.chmod(full, (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022)
    os.chmod(directory, 0o755)


def _run(cmd: list[str], spec: EnvironmentSpec, log: Log, what: str = "install its pinned requirements") -> None:
    """Run a build step, passing each output line to ``log`` (progress, not silence)."""
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    env = dict(os.environ)
    env.setdefault("UV_NO_PROGRESS", "1")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env)
    except OSError as exc:
        raise EnvironmentError(_failure(spec, what, str(exc))) from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        if line.strip():
            log(line)
    if proc.wait() != 0:
        raise EnvironmentError(_failure(spec, what, "\n".join(tail)))


def _failure(spec: EnvironmentSpec, what: str, output: str) -> str:
    # The command first: FailureReason keeps 1024 characters.
    return (f"ClientError: the environment for image {spec.image} is not cached here and could not be built "
            f"(could not {what}). If this machine is offline, build it where the package index is reachable "
            f"with `{spec.pull_command()}` (same OPENSAGE_HOME), then retry. Pinned: "
            f"{', '.join(spec.requirements)}. Last output:\n{output[-400:]}")
