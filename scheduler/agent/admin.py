"""Local administration of a stopped agent: `hasched agent reset-epoch`.

Authenticated by the file system: the state directory is 0700, owned by the agent's account, so
only that account (or root) can open the store; no token or network request is involved.
"""

from __future__ import annotations

import sys

from scheduler.agent.store import Store, StoreError
from scheduler.config import AgentConfig, ConfigError, load_agent_config
from scheduler.statedir import StateDirBusy, StateDirError, lock_state_dir


def reset_epoch(config: str, epoch: int) -> int:
    """The exit status; one line on stderr on any refusal, nothing changed."""
    try:
        cfg = load_agent_config(config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        if not (cfg.state_dir / "agent.sqlite").is_file():
            print(f"{config}: state_dir: no agent store in {cfg.state_dir}", file=sys.stderr)
            return 1
        # The daemon holds this lock for its life: the sure sign that it runs (it keeps its
        # epoch in memory, so a reset under it would not hold).
        lock = lock_state_dir(cfg.state_dir, "agent")
    except StateDirBusy as e:
        print(f"{config}: {e}: stop the agent first", file=sys.stderr)
        return 1
    except StateDirError as e:
        print(f"{config}: {e} (run this as the agent's account)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{config}: state_dir: {cfg.state_dir}: {e.strerror or e} (run this as the "
              f"agent's account)", file=sys.stderr)
        return 1
    try:
        return _reset(cfg, epoch)
    finally:
        lock.release()


def _reset(cfg: AgentConfig, epoch: int) -> int:
    try:
        store = Store(cfg.state_dir)
    except (OSError, StoreError) as e:
        print(f"state_dir: {cfg.state_dir}: {e}", file=sys.stderr)
        return 1
    try:
        before = store.epoch()
        store.reset_epoch(epoch)
    finally:
        store.close()
    print(f"agent {cfg.name}: epoch {before} -> {epoch}")
    return 0
