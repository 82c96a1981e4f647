"""How SeaweedFS is kept out of other local users' reach: the preexec_fn that puts weed in a namespace.

``netns`` (running as root): a network namespace of its own, with only its loopback up, so its master,
volume and filer ports exist for nobody else. ``userns`` (not root): the same inside an unprivileged user
namespace (our uid mapped to root there). ``jwt``: no namespace; weed's own JWT signing keys guard its
volume servers and filer. In every case weed runs with umask 077, so its unix sockets (the S3 one the proxy
uses, the gRPC ones weed puts in /tmp) accept only our user.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable

# Strongest first: SeaweedServer(protection="auto") takes the first this machine allows.
PROTECTIONS = ("netns", "userns", "jwt")
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


PROTECTION_TEXT = {
    "netns": "weed runs in its own network namespace; its master/volume/filer ports are unreachable from "
             "the host, the S3 proxy (which verifies every signature) is the only way in",
    "userns": "weed runs in an unprivileged user + network namespace; its master/volume/filer ports are "
              "unreachable from the host, the S3 proxy (which verifies every signature) is the only way in",
    "jwt": "no namespace could be created: weed listens on loopback with JWT signing keys on its volume "
           "servers and filer (security.toml); its master's HTTP port still answers local users",
}


def isolate(protection: str, die_with_parent: bool) -> Callable[[], None]:
    """A preexec_fn: umask 077 (weed's sockets: ours only), then the namespace ``protection`` names."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork: the child only calls it
    parent_signal = _parent_death_signal() if die_with_parent else None

    def preexec() -> None:
        uid, gid = os.getuid(), os.getgid()
        os.umask(0o077)
        if protection == "netns" and libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        if protection == "userns":
            if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER|CLONE_NEWNET) failed")
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        if protection in ("netns", "userns"):
            _loopback_up()
        if parent_signal is not None:
            parent_signal()

    return preexec


def _loopback_up() -> None:
    """``ip link set lo up`` in the current network namespace (SIOCSIFFLAGS), without needing iproute2."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent thread exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    parent = os.getpid()
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, sigterm)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sigterm)

    return set_signal
