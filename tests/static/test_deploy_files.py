"""The deployment files as their own tools read them: ansible-lint, ansible-playbook's syntax
check on both inventories' playbook, and `vagrant validate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_ansible_lint_passes_with_the_production_profile() -> None:
    r = run([str(BIN / "ansible-lint"), "--nocolor"], ROOT / "ansible")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr


def test_site_yml_passes_the_syntax_check_with_the_vagrant_inventory() -> None:
    r = run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventories/vagrant",
             "site.yml"], ROOT / "ansible")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_vagrantfile_validates() -> None:
    r = run(["vagrant", "validate"], ROOT / "vagrant")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout
