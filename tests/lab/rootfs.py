"""The Debian 12 root file system shared (read-only, as the overlay's lower dir) by every node.

Built once with debootstrap and kept as a tarball under CACHE_DIR; the tarball's name carries a
hash of the package list so a changed list builds a new one and an unchanged one never rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from .config import BASE_INCLUDE, CACHE_DIR, CHROOT_PACKAGES, STATE_DIR, SUITE

SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_key() -> str:
    text = "\n".join([SUITE, *BASE_INCLUDE, "--", *CHROOT_PACKAGES, "v2"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tarball_path() -> Path:
    return CACHE_DIR / f"rootfs-{SUITE}-{cache_key()}.tar"


def mirror() -> str:
    """The host's own Debian mirror, so the build uses the same package source as the host."""
    try:
        match = re.search(r"^URIs:\s*(\S+)", SOURCES.read_text(), re.M)
    except OSError:
        match = None
    return match.group(1) if match else DEFAULT_MIRROR


def _run(cmd: list[str], log) -> None:
    log(f"$ {' '.join(cmd)}")
    subprocess.run(cmd, check=True)


def build(log=print) -> Path:
    """Return the cached tarball, building it when the package list changed."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two concurrent `up`s must not build in one dir
        tarball = tarball_path()
        if tarball.exists():
            return tarball
        return _build(tarball, log)


def _build(tarball: Path, log) -> Path:
    work = CACHE_DIR / f"build-{cache_key()}"
    if work.exists():
        shutil.rmtree(work)
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_INCLUDE)}",
          SUITE, str(work), mirror()], log)
    # pcs cannot go into --include: debootstrap does not resolve the virtual packages that
    # python3-cryptography needs; apt inside the chroot does.
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = work / "usr/sbin/policy-rc.d"  # keep package scripts from starting daemons
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        for cmd in (["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", *CHROOT_PACKAGES]):
            log(f"$ chroot {work} {' '.join(cmd)}")
            subprocess.run(["chroot", str(work), *cmd], check=True, env=env)
        subprocess.run(["chroot", str(work), "apt-get", "clean"], check=True, env=env)
    finally:
        policy.unlink(missing_ok=True)
    _strip_identity(work)
    partial = tarball.with_suffix(".partial")
    _run(["tar", "-C", str(work), "--numeric-owner", "--xattrs", "-cf", str(partial), "."], log)
    partial.rename(tarball)
    shutil.rmtree(work)
    for stale in CACHE_DIR.glob(f"rootfs-{SUITE}-*.tar"):
        if stale != tarball:  # an older package list: never used again
            stale.unlink()
    return tarball


def _strip_identity(root: Path) -> None:
    """Remove what must differ per node: SSH host keys, machine id, the one-node corosync.conf."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/corosync/corosync.conf").unlink(missing_ok=True)
    # Units that need hardware or the outside world and only slow the boot in a container.
    # corosync-qdevice/-qnetd: the pacemaker_cluster role enables them where they belong.
    for unit in ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                 "corosync-qdevice.service", "corosync-qnetd.service"):
        for link in root.glob(f"etc/systemd/system/*.wants/{unit}"):
            link.unlink()


def extract(log=print) -> Path:
    """Unpack the cached tarball as the lower dir of every node's overlay."""
    tarball = build(log)
    lower = STATE_DIR / "rootfs"
    stamp = lower / ".hasched-lab-key"
    if stamp.exists() and stamp.read_text() == cache_key():
        return lower
    if lower.exists():
        shutil.rmtree(lower)
    lower.mkdir(parents=True)
    _run(["tar", "-C", str(lower), "--numeric-owner", "--xattrs", "-xf", str(tarball)], log)
    stamp.write_text(cache_key())
    return lower
