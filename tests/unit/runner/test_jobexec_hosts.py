"""jobexec makes a multi-instance job's hosts resolve: ``algo-1 … algo-N`` in a private /etc/hosts and the
host named ``algo-N`` in its own namespaces; the machine's /etc/hosts and name are untouched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from opensage.runner.jobexec import parse_hosts
from opensage.runner.sandbox import JOB_GID, JOBEXEC, namespace_supported, pick_job_uid, readable_roots

PROBE = ("import socket; print(socket.gethostbyname('algo-1'), socket.gethostbyname('algo-2'), "
         "socket.gethostname())")


def _jobexec(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    ml = tmp_path / "ml"
    (ml / "code").mkdir(parents=True)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o777)
    uid = pick_job_uid()
    argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", JOBEXEC,
            "--ml-root", str(ml), "--uid", str(uid), "--gid", str(JOB_GID), "--tmp", str(tmp),
            *[arg for root in readable_roots({}) for arg in ("--expose", root)], "--",
            sys.executable, "-I", "-c", PROBE]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **env})


@pytest.mark.skipif(not namespace_supported(), reason="needs root and mount namespaces")
def test_jobexec_job_hosts_resolve_in_its_namespace_only(tmp_path):
    done = _jobexec(tmp_path, {"OPENSAGE_JOB_HOSTS": "algo-1=127.0.0.1,algo-2=127.0.0.2",
                               "OPENSAGE_JOB_CURRENT_HOST": "algo-2"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["127.0.0.1", "127.0.0.2", "algo-2"]
    with open("/etc/hosts") as f:
        assert "algo-2" not in f.read()
    assert socket.gethostname() != "algo-2"


@pytest.mark.skipif(not namespace_supported(), reason="needs root and mount namespaces")
def test_jobexec_bad_hosts_value_refused_before_the_command(tmp_path):
    done = _jobexec(tmp_path, {"OPENSAGE_JOB_HOSTS": "algo-1=127.0.0.1\n6.6.6.6 evil"})
    assert done.returncode != 0
    assert "OPENSAGE_JOB_HOSTS" in done.stderr and done.stdout == ""


def test_parse_hosts_names_and_addresses_validated():
    assert parse_hosts("algo-1=127.0.0.1, algo-2=::1") == [("algo-1", "127.0.0.1"), ("algo-2", "::1")]
    for bad in ("algo-1", "algo 1=127.0.0.1", "algo-1=localhost", "-x=127.0.0.1"):
        with pytest.raises(ValueError):
            parse_hosts(bad)
