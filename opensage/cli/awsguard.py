"""A botocore client plugin: a request signed with the platform's key never leaves for AWS.

The generated profile points every service at the platform, but code may pass an explicit ``endpoint_url``,
which beats the profile: SageMaker SDK v2/v3 ``get_execution_role()``, ``Session.account_id()`` and
``generate_default_sagemaker_bucket_name()`` build STS clients on ``https://sts.<region>.amazonaws.com``.
``opensage env`` exports ``BOTOCORE_EXPERIMENTAL__PLUGINS=opensage=opensage.cli.awsguard``; botocore
imports this module for every client it builds (a Python without opensage skips it silently) and we
rewrite such a request's origin to the platform's before it is signed and sent.

Only requests signed with the platform's own access key are touched (read from the generated profile
files), so a client of a real AWS profile in the same process keeps going to AWS. Self-contained:
stdlib + botocore, no other opensage import (it runs inside users' processes).
"""

from __future__ import annotations

import configparser
import functools
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROFILE = "opensage"


@functools.lru_cache(maxsize=8)
def _platform(config_file: str, credentials_file: str, _versions: tuple[int, int]) -> tuple[str, str, str] | None:
    """(access key, control-plane origin, S3 origin) of the generated profile, or None."""
    config, creds = configparser.ConfigParser(), configparser.ConfigParser()
    try:
        config.read(config_file)
        creds.read(credentials_file)
        key = creds[PROFILE]["aws_access_key_id"].strip()
        endpoint = config[f"profile {PROFILE}"]["endpoint_url"].strip()
    except (KeyError, configparser.Error, OSError):
        return None
    s3 = endpoint
    services = config.get(f"profile {PROFILE}", "services", fallback="").strip()
    if services and config.has_section(f"services {services}"):
        s3_block = config.get(f"services {services}", "s3", fallback="")
        for line in s3_block.splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "endpoint_url" and value.strip():
                s3 = value.strip()
    return key, endpoint, s3


def _current_platform() -> tuple[str, str, str] | None:
    config = os.environ.get("AWS_CONFIG_FILE", "")
    creds = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "")
    if not config or not creds:
        return None
    try:  # rewritten files (a new `opensage up`) are read again
        versions = (os.stat(config).st_mtime_ns, os.stat(creds).st_mtime_ns)
    except OSError:
        return None
    return _platform(config, creds, versions)


def _access_key(request_signer: Any) -> str | None:
    # botocore keeps the client's credentials on its signer; no public accessor exists.
    credentials = getattr(request_signer, "_credentials", None)
    if credentials is None:
        return None
    try:
        return credentials.get_frozen_credentials().access_key
    except Exception:  # noqa: BLE001 - unresolvable credentials: not ours, leave the request alone
        return None


def redirect_to_platform(params: dict[str, Any], model: Any = None, request_signer: Any = None,
                         **_: Any) -> None:
    """``before-call`` handler: a request for a non-platform origin signed with our key goes to us."""
    platform = _current_platform()
    url = params.get("url") if isinstance(params, dict) else None
    if platform is None or not url:
        return
    key, endpoint, s3 = platform
    origin = urlsplit(url)
    if origin.netloc in {urlsplit(endpoint).netloc, urlsplit(s3).netloc}:
        return
    if _access_key(request_signer) != key:
        return
    service = getattr(getattr(model, "service_model", None), "service_name", "")
    target = urlsplit(s3 if service == "s3" else endpoint)
    params["url"] = urlunsplit((target.scheme, target.netloc, origin.path, origin.query, origin.fragment))


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point (botocore.plugin.load_client_plugins)."""
    client.meta.events.register_first("before-call", redirect_to_platform)
