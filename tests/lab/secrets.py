"""Per-lab secrets: generated at the first `up`, kept 0600 in the state dir, never committed.

Ansible reads them through a group_vars symlink the inventory writer makes; they play the part a
Vault-encrypted vars file plays in production.
"""

from __future__ import annotations

import os
import secrets as random
from pathlib import Path

import yaml

from .config import STATE_DIR

SECRETS_FILE = STATE_DIR / "secrets.yml"
SSH_DIR = STATE_DIR / "ssh"


# Each secret's generator. A lab made before a secret existed gets it at its next `up` (added
# to its file, the others kept): generated once, like the rest.
GENERATE = {
    "pacemaker_cluster_hacluster_password": lambda: random.token_urlsafe(18),
    "pacemaker_cluster_ipmi_password": lambda: random.token_urlsafe(12),
    "hasched_agent_token": lambda: random.token_urlsafe(32),
    "hasched_api_token": lambda: random.token_urlsafe(32),
    "hasched_replication_token": lambda: random.token_urlsafe(32),
}


def load() -> dict:
    values = yaml.safe_load(SECRETS_FILE.read_text()) if SECRETS_FILE.exists() else {}
    missing = [key for key in GENERATE if key not in values]
    if not missing:
        return values
    values.update({key: GENERATE[key]() for key in missing})
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = SECRETS_FILE.with_name(SECRETS_FILE.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(values, fh)
    os.replace(tmp, SECRETS_FILE)
    return values


def write_api_token(values: dict) -> Path:
    """The scheduler API token as a file, for `hasched --token-file` from the client namespace."""
    path = STATE_DIR / "api.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(values["hasched_api_token"] + "\n")
    return path


def ssh_key() -> Path:
    """The lab's root SSH key (private key path); its .pub goes into every node."""
    SSH_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = SSH_DIR / "id_ed25519"
    if not key.exists():
        import subprocess

        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hasched-lab",
                        "-f", str(key)], check=True)
    return key
