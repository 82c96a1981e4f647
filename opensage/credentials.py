"""Who may sign a request: the platform's own key pair, or the temporary credentials of one job.

SageMaker hands a job its execution *role's* temporary credentials (access key + secret + session token,
as STS issues them), never the account's root keys. We do the same: every job, endpoint and transform gets
credentials of its own, and the platform's key pair never leaves the control plane.

Temporary credentials are derived, not stored, so a restarted control plane still recognises the
credentials of the jobs it adopts:

* access key   ``ASIA`` + 16 random base32 characters (AWS's prefix for temporary keys);
* secret       HMAC(root secret, "secret:" + access key), base64url;
* session token ``OSTS1.<payload>.<mac>`` where payload is base64url JSON ``{"ak": access key, "o": owner}``
  and mac is HMAC(root secret, "token:" + payload). The token binds the access key to its owner.

The owner is a string the issuer chooses: ``<kind>/<name>`` (``training-job/foo``), with a generation for
resources whose names can be reused (``endpoint/bar/<creation epoch ms>``), so a deleted and recreated
endpoint does not revive the old one's credentials. Credentials stop working when their owner stops being
active: ``is_active(owner)`` is asked (answers cached briefly; an inactive owner is remembered for good, since
an owner never becomes active again).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opensage.settings import Credentials

TEMPORARY_PREFIX = "ASIA"
TOKEN_PREFIX = "OSTS1."
ACTIVE_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Principal:
    """The identity behind an access key, with the secret that key signs with."""

    access_key: str
    secret_key: str
    owner: str | None = None  # None: the platform's own key pair; else "<kind>/<name>"

    @property
    def is_temporary(self) -> bool:
        return self.owner is not None

    @property
    def name(self) -> str:
        """How logs name it."""
        return self.owner or "platform"


@dataclass(frozen=True)
class TemporaryCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    owner: str

    def env(self) -> dict[str, str]:
        """The environment variables boto3 / the SDK read them from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_SESSION_TOKEN": self.session_token}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CredentialAuthority:
    """Issues temporary credentials and answers ``principal(access_key, session_token)`` for verifiers."""

    def __init__(self, root: Credentials, is_active: Callable[[str], bool] | None = None) -> None:
        self.root = root
        self._root_principal = Principal(root.access_key, root.secret_key)
        self._key = root.secret_key.encode()
        self.is_active = is_active or (lambda owner: True)
        self._active: dict[str, float] = {}  # owner -> monotonic time it was last seen active
        self._ended: set[str] = set()
        self._lock = threading.Lock()

    # -- issuing ---------------------------------------------------------------------------------------
    def issue(self, owner: str) -> TemporaryCredentials:
        """New temporary credentials for ``owner`` (each call gives a new key; all stay valid while the
        owner is active)."""
        access_key = TEMPORARY_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode()
        payload = _b64(json.dumps({"ak": access_key, "o": owner}, separators=(",", ":")).encode())
        token = f"{TOKEN_PREFIX}{payload}.{self._mac('token:' + payload)}"
        return TemporaryCredentials(access_key, self._secret_for(access_key), token, owner)

    def _mac(self, msg: str) -> str:
        return _b64(hmac.digest(self._key, msg.encode(), "sha256"))

    def _secret_for(self, access_key: str) -> str:
        return self._mac("secret:" + access_key)

    # -- verifying -------------------------------------------------------------------------------------
    def principal(self, access_key: str, session_token: str | None) -> Principal | None:
        """The principal that ``access_key`` (+ ``session_token``) stands for, or None if not valid now.

        The root key must come without a token; a temporary key needs the token it was issued with, and
        an owner that is still active.
        """
        if access_key == self.root.access_key:
            return self._root_principal if not session_token else None
        if not access_key.startswith(TEMPORARY_PREFIX) or not session_token:
            return None
        owner = self._token_owner(access_key, session_token)
        if owner is None or not self._owner_active(owner):
            return None
        return Principal(access_key, self._secret_for(access_key), owner)

    def _token_owner(self, access_key: str, token: str) -> str | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        payload, _, mac = token[len(TOKEN_PREFIX):].partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac("token:" + payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(claims, dict) or claims.get("ak") != access_key or not isinstance(claims.get("o"), str):
            return None
        return claims["o"]

    def _owner_active(self, owner: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if owner in self._ended:
                return False
            seen = self._active.get(owner)
            if seen is not None and now - seen < ACTIVE_CACHE_SECONDS:
                return True
        active = self.is_active(owner)
        with self._lock:
            if active:
                self._active[owner] = now
            else:
                self._active.pop(owner, None)
                self._ended.add(owner)
        return active

    def revoke(self, owner: str) -> None:
        """``owner`` ended: its credentials stop working now (not after the cache expires)."""
        with self._lock:
            self._active.pop(owner, None)
            self._ended.add(owner)


# -- owners that are SageMaker resources -------------------------------------------------------------
def resource_owner(kind: str, name: str, creation_time: float) -> str:
    """The owner string of a resource row: kind, name and a generation (its creation time in ms)."""
    return f"{kind}/{name}/{int(creation_time * 1000)}"


def resource_is_active(get: Callable[[str, str], object | None], terminal: dict[str, set[str]],
                       owner: str) -> bool:
    """True while the row ``owner`` names exists (same generation) and is not in a terminal status.

    ``get(kind, name)`` returns the row (``ResourceRepository.get``); ``terminal`` is states.TERMINAL.
    """
    kind, _, rest = owner.partition("/")
    name, _, generation = rest.rpartition("/")
    row = get(kind, name)
    if row is None or str(int(row.creation_time * 1000)) != generation:  # type: ignore[attr-defined]
        return False
    return row.status not in terminal.get(kind, set())  # type: ignore[attr-defined]
