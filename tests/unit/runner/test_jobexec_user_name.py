"""jobexec gives the job's uid a name in its own mount namespace: tools that look the user up (whoami, Java's
user.home, Hadoop's login, pwd.getpwuid) work, and the host's /etc/passwd is untouched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opensage.runner.sandbox import JOB_GID, JOBEXEC, namespace_supported, pick_job_uid, readable_roots

pytestmark = pytest.mark.skipif(not namespace_supported(), reason="needs root and mount namespaces")


def test_jobexec_job_uid_has_a_passwd_and_group_entry_in_its_namespace_only(tmp_path):
    uid = pick_job_uid()
    probe = ("import os, pwd, grp; p = pwd.getpwuid(os.getuid()); "
             "print(p.pw_name, p.pw_dir, grp.getgrgid(os.getgid()).gr_name, pwd.getpwnam('root').pw_uid)")
    argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", JOBEXEC,
            "--uid", str(uid), "--gid", str(JOB_GID), "--tmp", str(tmp_path),
            *[arg for root in readable_roots({}) for arg in ("--expose", root)], "--",
            sys.executable, "-I", "-c", probe]
    tmp_path.chmod(0o777)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"job{uid}", f"/tmp/opensage-job-{uid}", "opensage-jobs", "0"]
    whoami = subprocess.run(argv[:-4] + ["whoami"], capture_output=True, text=True, timeout=60, check=False)
    assert whoami.stdout.strip() == f"job{uid}", whoami.stderr
    with open("/etc/passwd") as f:  # the host's file never gets the line
        assert f"job{uid}:" not in f.read()
