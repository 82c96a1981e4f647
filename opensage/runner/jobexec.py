"""Starts a job's user command: ``python -I jobexec.py [options] -- argv...`` (standard library only).

Run by the agent (``runner/sandbox.py``) for a job's command and by ``serving/replicas.py`` for a model
server, in a private mount namespace when they are root (``unshare --mount``). As root it:

1. bind-mounts the job's ml directory on ``/opt/ml`` (``--ml-root``);
2. makes the directories the job must read (``--expose``: the interpreter, the platform's venv and package,
   the jobs' requirements-venv cache) reachable when an ancestor is closed to other users (a 0700 ``/root``
   holding pyenv, the 0700 platform home holding the cache): a tmpfs is mounted over that ancestor *in
   this namespace only* and each exposed directory bound back at its path. The ancestor's other contents
   (the platform's key pair, database, other jobs' files) are then not even visible; ``--expose-ro``
   directories (a model server's model) are also made read-only;
3. binds the job's own ``--tmp`` directory on ``/tmp`` (nothing shared with other jobs or the host);
4. gives the job user a name: ``/etc/passwd`` and ``/etc/group`` of this namespace are the host's plus a
   ``job<uid>`` line (Java's ``user.home``, Hadoop's login, ``whoami`` and ``pwd.getpwuid`` need one);
   and, for a multi-instance training job (``OPENSAGE_JOB_HOSTS``), ``/etc/hosts`` gets ``algo-1 … algo-N``
   and the host is named ``algo-N`` in a UTS namespace of its own. Not root (no namespace): the names do not
   resolve; ``frameworks/distributed.py`` then hands launchers the addresses instead;
5. drops to ``--uid`` / ``--gid`` (no supplementary groups), with HOME (``/tmp/opensage-job-<uid>``) /
   USER / LOGNAME set;

then, as the job user, asks the kernel to SIGKILL it when the agent dies (PR_SET_PDEATHSIG) and execs the
command. Without ``--uid`` (the agent is not root) only the death signal and the exec happen.

It is run with ``-I`` by path, not imported from ``opensage``: the job's environment (PYTHONPATH) is the
user's to set and must not decide what runs as root here.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import stat
import sys

PR_SET_PDEATHSIG = 1
OPT_ML = "/opt/ml"


MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2


def _mount(source: str, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    """mount(2) itself: mount(8) would canonicalize a /proc/self/fd source into a (covered) path name."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind(source: str, target: str) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)


def closed_ancestor(path: str) -> str | None:
    """The shallowest ancestor of ``path`` (or ``path``'s parent chain) other users cannot traverse."""
    parts = os.path.realpath(path).split("/")[1:]
    current = ""
    for part in parts[:-1]:
        current += "/" + part
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        if not mode & stat.S_IXOTH:
            return current
    return None


def expose(paths: list[str], read_only: list[str] | None = None, tmp: str | None = None) -> None:
    """Make each of ``paths`` (and ``read_only``, which are also made read-only) reachable by any user in
    this mount namespace (see the module doc); then bind ``tmp`` on /tmp, keeping exposed paths under /tmp
    reachable."""
    read_only = [os.path.realpath(p) for p in read_only or [] if os.path.isdir(p)]
    wanted = list(dict.fromkeys([os.path.realpath(p) for p in paths if os.path.isdir(p)] + read_only))
    # Held open before anything is covered: bound back from /proc/self/fd.
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in wanted}
    tmp_fd = os.open(tmp, os.O_PATH | os.O_DIRECTORY) if tmp else None
    plan = {path: closed_ancestor(path) for path in wanted}
    covers = sorted({a for a in plan.values() if a is not None}, key=len)
    covers = [a for a in covers if not any(a != b and a.startswith(b + "/") for b in covers)]
    for ancestor in covers:
        _mount("opensage-hidden", ancestor, "tmpfs", 0, "mode=0755,size=1m")
    bound = [path for path, ancestor in plan.items() if ancestor is not None]
    if tmp_fd is not None:
        _bind(f"/proc/self/fd/{tmp_fd}", "/tmp")
        os.close(tmp_fd)
        bound += [p for p in wanted if p.startswith("/tmp/") and p not in bound]
    for path in bound:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _bind(f"/proc/self/fd/{fds[path]}", path)
    for fd in fds.values():
        os.close(fd)
    for path in read_only:
        if path not in bound:
            _bind(path, path)  # a mount of its own, so that it alone turns read-only
        _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def make_home(uid: int, gid: int) -> str:
    """A private HOME for the job user (pip's cache, dotfiles); never a path someone else prepared."""
    home = f"/tmp/opensage-job-{uid}"
    try:
        os.mkdir(home, 0o700)
    except FileExistsError:
        st = os.lstat(home)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, uid):
            raise SystemExit(f"jobexec: {home} exists and is not this job's") from None
    os.lchown(home, uid, gid)  # lstat said: a directory, not a link
    return home


def name_the_user(uid: int, gid: int, home: str) -> None:
    """Bind copies of /etc/passwd and /etc/group with the job's user and group over the originals, in this
    mount namespace only."""
    bind_etc_copies(user_lines(uid, gid, home))


def user_lines(uid: int, gid: int, home: str) -> dict[str, str]:
    return {"/etc/passwd": f"job{uid}:x:{uid}:{gid}:OpenSage job:{home}:/bin/sh\n",
            "/etc/group": f"opensage-jobs:x:{gid}:\n"}


def bind_etc_copies(additions: dict[str, str]) -> None:
    """Bind a copy of each file (the original plus its added lines) over it, in this mount namespace only.
    The copies live on a small tmpfs of this namespace (a memfd or an O_TMPFILE file cannot be a bind
    source), read-only to everyone; its mount point is removed once the copies are bound."""
    import tempfile

    staging = tempfile.mkdtemp(prefix="opensage-etc-")
    try:
        _mount("opensage-etc", staging, "tmpfs", 0, "mode=0755,size=4m")
        for path, line in additions.items():
            try:
                with open(path, "rb") as f:
                    original = f.read()
            except FileNotFoundError:
                original = b""
                if path != "/etc/hosts":
                    continue
                open(path, "ab").close()  # a bind needs a target; /etc/hosts is the only one worth creating
            except OSError:
                continue
            if original and not original.endswith(b"\n"):
                original += b"\n"
            copy = os.path.join(staging, os.path.basename(path))
            with open(copy, "wb") as f:
                f.write(original + line.encode())
            os.chmod(copy, 0o444)
            _bind(copy, path)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.umount2(staging.encode(), MNT_DETACH)  # the bound copies keep the tmpfs alive
    finally:
        os.rmdir(staging)


# -- the job's hosts (multi-instance training) ------------------------------------------------------------
# Set by the training reconciler: every host of the job and its address (loopback on one machine, the node's
# address under a cluster executor), and which one this is. Left in the job's environment: the framework
# launcher falls back to these addresses where the names do not resolve (an agent that is not root).
HOSTS_ENV = "OPENSAGE_JOB_HOSTS"  # "algo-1=127.0.0.1,algo-2=127.0.0.1"
CURRENT_HOST_ENV = "OPENSAGE_JOB_CURRENT_HOST"
CLONE_NEWUTS = 0x04000000
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def parse_hosts(text: str) -> list[tuple[str, str]]:
    """``name=address,...`` -> pairs; anything that is not a plain host name and an IP address is refused
    (the value is written into /etc/hosts as root)."""
    import ipaddress

    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not _HOST_NAME.fullmatch(name):
            raise ValueError(f"bad host name in {item!r}")
        pairs.append((name, str(ipaddress.ip_address(address))))
    return pairs


def hosts_lines(hosts: list[tuple[str, str]]) -> dict[str, str]:
    return {"/etc/hosts": "# the job's hosts (OpenSage)\n" + "".join(f"{a} {n}\n" for n, a in hosts)}


def name_the_host(name: str) -> bool:
    """The host's name in a UTS namespace of its own (``hostname`` = ``algo-N``, as in a SageMaker container).
    False when the kernel refuses (the job then sees the machine's name)."""
    if not _HOST_NAME.fullmatch(name):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        return False
    return libc.sethostname(name.encode(), len(name.encode())) == 0


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("jobexec: could not drop privileges")


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the agent dies (set after setuid: a credential change clears it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the agent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobexec")
    parser.add_argument("--ml-root")
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--expose", action="append", default=[])
    parser.add_argument("--expose-ro", action="append", default=[])
    parser.add_argument("--cwd")
    parser.add_argument("--tmp", help="a directory of the job's own, bound on /tmp (with --uid)")
    parser.add_argument("--outlive-parent", action="store_true",
                        help="no PR_SET_PDEATHSIG: model servers outlive a control-plane restart and are adopted")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return args


def prepare(args: argparse.Namespace, env: dict[str, str], parent: int) -> dict[str, str]:
    """Everything before the exec (steps 1-5 of the module doc, then the death signal and the cwd), in a
    mount namespace of the caller's own; returns the command's environment. Also used by a fork server's
    child (``runner/zygote.py``), which then runs the command in-process instead of exec'ing it."""
    env = dict(env)
    if args.ml_root:
        _bind(args.ml_root, OPT_ML)
    additions: dict[str, str] = {}
    if args.ml_root and env.get(HOSTS_ENV):  # in a mount namespace of its own: the job's hosts resolve
        try:
            additions.update(hosts_lines(parse_hosts(env[HOSTS_ENV])))
        except ValueError as exc:
            raise SystemExit(f"jobexec: {HOSTS_ENV}: {exc}") from None
        name_the_host(env.get(CURRENT_HOST_ENV, ""))
    if args.uid is not None:
        expose(args.expose, args.expose_ro, args.tmp)
        home = make_home(args.uid, args.gid if args.gid is not None else args.uid)
        additions.update(user_lines(args.uid, args.gid if args.gid is not None else args.uid, home))
    if additions:
        bind_etc_copies(additions)
    if args.uid is not None:
        drop_privileges(args.uid, args.gid if args.gid is not None else args.uid)
        user = f"job{args.uid}"
        env.update({"HOME": home, "USER": user, "LOGNAME": user})
    if not args.outlive_parent:
        die_with_parent(parent)
    if args.cwd:
        os.chdir(args.cwd)
    return env


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.command:
        raise SystemExit("jobexec: no command")
    env = prepare(args, dict(os.environ), os.getppid())
    os.execvpe(args.command[0], args.command, env)


if __name__ == "__main__":
    try:
        main()
    except FileNotFoundError as exc:
        print(f"jobexec: {exc}", file=sys.stderr)
        sys.exit(127)
    except OSError as exc:
        print(f"jobexec: {exc}", file=sys.stderr)
        sys.exit(126)
