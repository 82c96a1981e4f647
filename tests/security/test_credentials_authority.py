"""Temporary credentials (opensage.credentials): derived, bound to their owner, dead when the owner ends."""

from __future__ import annotations

from opensage.credentials import CredentialAuthority, resource_is_active, resource_owner
from opensage.settings import Credentials

ROOT = Credentials("OSAKROOT", "root-secret")


def test_principal_temporary_credentials_resolve_to_their_owner():
    authority = CredentialAuthority(ROOT)
    creds = authority.issue("training-job/a/1")
    found = authority.principal(creds.access_key_id, creds.session_token)
    assert found is not None and found.owner == "training-job/a/1" and found.is_temporary
    assert found.secret_key == creds.secret_access_key
    assert creds.access_key_id.startswith("ASIA") and creds.secret_access_key != ROOT.secret_key


def test_principal_survives_a_new_authority_over_the_same_root_key():
    creds = CredentialAuthority(ROOT).issue("endpoint/e/5")
    assert CredentialAuthority(ROOT).principal(creds.access_key_id, creds.session_token) is not None
    other_root = CredentialAuthority(Credentials("OSAKROOT", "another-secret"))
    assert other_root.principal(creds.access_key_id, creds.session_token) is None


def test_principal_refuses_a_token_of_another_key_or_tampered_or_missing():
    authority = CredentialAuthority(ROOT)
    a, b = authority.issue("training-job/a/1"), authority.issue("training-job/b/1")
    assert authority.principal(a.access_key_id, b.session_token) is None
    assert authority.principal(a.access_key_id, a.session_token[:-2] + "xx") is None
    assert authority.principal(a.access_key_id, None) is None
    assert authority.principal("ASIANOTISSUED", a.session_token) is None


def test_principal_root_key_with_a_session_token_is_refused():
    authority = CredentialAuthority(ROOT)
    assert authority.principal(ROOT.access_key, None).owner is None
    assert authority.principal(ROOT.access_key, "OSTS1.x.y") is None


def test_principal_ends_with_the_owner_and_stays_ended():
    active = {"training-job/a/1": True}
    authority = CredentialAuthority(ROOT, is_active=lambda owner: active.get(owner, False))
    creds = authority.issue("training-job/a/1")
    assert authority.principal(creds.access_key_id, creds.session_token) is not None
    authority.revoke("training-job/a/1")
    assert authority.principal(creds.access_key_id, creds.session_token) is None
    active["training-job/a/1"] = True  # an owner never comes back
    assert authority.principal(creds.access_key_id, creds.session_token) is None


class _Row:
    def __init__(self, status: str, creation_time: float) -> None:
        self.status, self.creation_time = status, creation_time


def test_resource_is_active_checks_status_and_generation():
    rows = {("training-job", "a"): _Row("InProgress", 10.5), ("endpoint", "e"): _Row("InService", 20.0)}
    get = lambda kind, name: rows.get((kind, name))  # noqa: E731
    terminal = {"training-job": {"Completed", "Failed", "Stopped"}}
    assert resource_is_active(get, terminal, resource_owner("training-job", "a", 10.5))
    assert not resource_is_active(get, terminal, resource_owner("training-job", "a", 11.0))  # recreated
    assert resource_is_active(get, terminal, resource_owner("endpoint", "e", 20.0))
    rows[("training-job", "a")].status = "Completed"
    assert not resource_is_active(get, terminal, resource_owner("training-job", "a", 10.5))
    del rows[("endpoint", "e")]
    assert not resource_is_active(get, terminal, resource_owner("endpoint", "e", 20.0))
