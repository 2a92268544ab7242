"""The machine's prerequisites as deps/debian-packages.txt lists them: which Debian package gives
each program we call, and one way for a test or the lab to say that one is missing.

Outside `make test` a missing program skips the test with the package to install; under
`make test` (HASCHED_STRICT=1) the tiers plugin turns that skip into a failure, so no tier can
pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_LIST = REPO / "deps" / "debian-packages.txt"
# Where Debian puts programs; sbin is not on an ordinary user's PATH, but root's tests use it.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Package:
    name: str
    programs: tuple[str, ...]


def packages() -> list[Package]:
    found = []
    for line in PACKAGE_LIST.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            found.append(Package(words[0], tuple(words[1:])))
    return found


def package_of(program: str) -> str | None:
    """The listed package that provides `program`, as the list says (None when it is not listed)."""
    for pkg in packages():
        if program in pkg.programs:
            return pkg.name
    return None


def which(program: str) -> str | None:
    return shutil.which(program, path=SYSTEM_PATH + os.pathsep + os.environ.get("PATH", ""))


def missing_message(program: str) -> str:
    pkg = package_of(program)
    hint = f"apt-get install {pkg}" if pkg else "its package is not in deps/debian-packages.txt"
    return f"{program} missing: {hint} (or run 'make deps' as root)"


def need(*programs: str) -> None:
    """Skip the calling test, naming the package, unless every program is installed."""
    import pytest

    for program in programs:
        if which(program) is None:
            pytest.skip(missing_message(program))


def need_root(why: str) -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")
