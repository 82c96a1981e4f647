"""Settings, built once (from flags and OPENSAGE_* environment) and passed down. No globals."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """One key pair per home, generated on first start and kept (0600) so clients keep working."""
        if path.exists():
            raw = json.loads(path.read_text())
            return cls(raw["access_key"], raw["secret_key"])
        creds = cls("OSAK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"access_key": creds.access_key, "secret_key": creds.secret_key}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return creds


def primary_address() -> str:
    """This machine's address on its default route (no packet is sent); loopback when there is none."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def make_private_home(home: Path) -> None:
    """Create the home 0700 (it holds the key pair, the database, the object store's data and every job's
    files), and tighten an existing one the platform owns: a job's code, run as another user, must not
    even list it."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = home.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(home, 0o700)


@dataclass(frozen=True)
class Settings:
    home: Path
    credentials: Credentials
    host: str = "127.0.0.1"
    port: int = 7420
    db_url: str | None = None  # default: sqlite under home
    s3_endpoint: str | None = None  # None: embedded SeaweedFS
    s3_port: int | None = None  # embedded SeaweedFS S3 port (None: pick a free one)
    region: str = "us-east-1"
    account: str = "000000000000"
    default_bucket: str | None = None
    reconcile_interval: float = 0.2  # seconds between reconciler passes when idle
    stop_grace_seconds: int = 120
    serverless_idle_seconds: float = 300.0  # a serverless variant with no request for this long scales to zero
    # An unpacked model (<home>/models) no endpoint or running transform uses, and not deployed for this long,
    # is deleted (serving/model_cache.py); 0 keeps every one.
    model_cache_idle_seconds: float = 3600.0
    # Where job agents run: "local" (subprocesses) or "ray" (a Ray cluster at ray_address; executors/ray.py).
    executor: str = "local"
    ray_address: str | None = None  # HOST:PORT of the cluster's GCS, or None = "auto" (this node's cluster)
    instance_types_file: Path | None = None  # operator's overrides of executors/instance_types.py
    advertise_host: str | None = None  # the address jobs on other machines reach the control plane at
    # How long a job Ray cannot place waits before CapacityError (OPENSAGE_RAY_CAPACITY_WAIT_SECONDS; 0: for
    # ever; None: executors/ray.py's CAPACITY_WAIT_SECONDS).
    ray_capacity_wait_seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'opensage.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def venv_cache(self) -> Path:
        return self.home / "venvs"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.public_host}:{self.port}"

    @property
    def public_host(self) -> str:
        """The bind address, or for a wildcard bind (0.0.0.0 / ::) the address others reach this machine at."""
        if self.advertise_host:
            return self.advertise_host
        if self.host in ("0.0.0.0", "::", ""):
            return primary_address()
        return self.host

    @property
    def binds_loopback(self) -> bool:
        """Whether the platform listens only on this machine (--host 127.0.0.1 / ::1 / localhost)."""
        import ipaddress

        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def object_store_public_host(self) -> str | None:
        """The host the embedded S3 front is handed out at: None (loopback) unless the platform binds a
        non-loopback address, then ``public_host`` (so jobs on other Ray nodes reach it)."""
        return None if self.binds_loopback else self.public_host

    @property
    def instance_types_path(self) -> Path:
        return self.instance_types_file or self.home / "instance-types.json"

    @property
    def bucket(self) -> str:
        return self.default_bucket or f"sagemaker-{self.region}-{self.account}"

    @classmethod
    def build(cls, home: str | Path | None = None, **overrides) -> Settings:
        env = os.environ
        home_path = Path(home or env.get("OPENSAGE_HOME") or Path.home() / ".opensage").expanduser().resolve()
        make_private_home(home_path)
        creds = Credentials.load_or_create(home_path / "credentials.json")
        values: dict = {
            "host": env.get("OPENSAGE_HOST", "127.0.0.1"),
            "port": int(_number(env, "OPENSAGE_PORT", 7420, whole=True)),
            "db_url": env.get("OPENSAGE_DB"),
            "s3_endpoint": env.get("OPENSAGE_S3_ENDPOINT"),
            "region": env.get("OPENSAGE_REGION", "us-east-1"),
            "serverless_idle_seconds": _number(env, "OPENSAGE_SERVERLESS_IDLE_SECONDS", 300.0),
            "model_cache_idle_seconds": _number(env, "OPENSAGE_MODEL_CACHE_IDLE_SECONDS", 3600.0),
            "executor": env.get("OPENSAGE_EXECUTOR", "local"),
            "ray_address": env.get("OPENSAGE_RAY_ADDRESS"),
            "instance_types_file": Path(env["OPENSAGE_INSTANCE_TYPES"]) if env.get("OPENSAGE_INSTANCE_TYPES") else None,
            "advertise_host": env.get("OPENSAGE_ADVERTISE_HOST"),
            "ray_capacity_wait_seconds": _seconds(env, "OPENSAGE_RAY_CAPACITY_WAIT_SECONDS"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(home=home_path, credentials=creds, **values)


class SettingError(ValueError):
    """An OPENSAGE_* variable the platform cannot use; the message names it and says what it takes."""


def _number(env: Mapping[str, str], name: str, default: float, whole: bool = False) -> float:
    """A non-negative number from ``name`` (``default`` when unset or empty); SettingError otherwise."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = -1
    if not value >= 0 or value == float("inf"):
        kind = "a whole number" if whole else "a number of seconds"
        raise SettingError(f"{name}={raw!r} is not usable: give {kind}, 0 or more (default {default:g}).")
    return value


def _seconds(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:  # left to the user of the setting to refuse with its own message (cli/ray_executor.py)
        return None
