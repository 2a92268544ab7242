"""Local administration of a stopped agent: `hasched agent reset-epoch`.

Authenticated by the file system: the state directory is 0700, owned by the agent's account, so
only that account (or root) can open the store; no token or network request is involved.
"""

from __future__ import annotations

import socket
import sys

from scheduler.agent.store import Store, StoreError
from scheduler.config import AgentConfig, ConfigError, load_agent_config


def agent_listening(cfg: AgentConfig) -> bool:
    """Something answers on the agent's port: a running agent, most likely."""
    try:
        with socket.create_connection((cfg.listen_host, cfg.listen_port), timeout=1):
            return True
    except OSError:
        return False


def reset_epoch(config: str, epoch: int) -> int:
    """The exit status; one line on stderr on any refusal, nothing changed."""
    try:
        cfg = load_agent_config(config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    if agent_listening(cfg):
        print(f"{config}: something listens on {cfg.listen_host}:{cfg.listen_port}: stop the "
              f"agent first (it keeps its epoch in memory)", file=sys.stderr)
        return 1
    try:
        if not (cfg.state_dir / "agent.sqlite").is_file():
            print(f"{config}: state_dir: no agent store in {cfg.state_dir}", file=sys.stderr)
            return 1
        store = Store(cfg.state_dir)
    except OSError as e:
        print(f"{config}: state_dir: {cfg.state_dir}: {e.strerror or e} (run this as the "
              f"agent's account)", file=sys.stderr)
        return 1
    except StoreError as e:
        print(f"{config}: state_dir: {e}", file=sys.stderr)
        return 1
    try:
        before = store.epoch()
        store.reset_epoch(epoch)
    finally:
        store.close()
    print(f"agent {cfg.name}: epoch {before} -> {epoch}")
    return 0
