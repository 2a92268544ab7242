"""The agent process: config, store, runner, HTTP API, signals.

SIGTERM/SIGINT stop the API and the watching but leave the supervisors running: each run has its
own supervisor in its own session, and the next agent start adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pwd
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from scheduler.agent import containment as contain
from scheduler.agent.api import AgentAPI
from scheduler.agent.launcher import Spawner
from scheduler.agent.runner import Runner
from scheduler.agent.store import Store, StoreError
from scheduler.config import AgentConfig, ConfigError, load_agent_config, read_token
from scheduler.logs import LOG_LEVELS, setup_logging
from scheduler.statedir import StateDirBusy, StateDirError, lock_state_dir

log = logging.getLogger("hasched.agent")

PURGE_INTERVAL = 3600.0



def ssl_context(cfg: AgentConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
    return ctx


async def purge_loop(store: Store, retention: float) -> None:
    while True:
        try:
            n = await store.purge(retention)
            if n:
                log.info("forgot %d acknowledged run(s) older than the retention", n)
        except Exception:
            log.exception("purging old runs failed")
        # Hourly, or more often when the retention is short (tests, small disks).
        await asyncio.sleep(min(PURGE_INTERVAL, max(retention / 10, 0.5)))


def default_user(cfg: AgentConfig) -> str:
    """The account of jobs that name none: `default_user`, else nobody when the agent can
    switch accounts (root), else the agent's own (allowed only by allow_agent_account)."""
    if cfg.default_user is not None:
        name = cfg.default_user
    else:
        name = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(cfg.path, None, "default_user", f"no such user {name!r}") from None
    return name


def containment(cfg: AgentConfig) -> contain.Plan:
    if cfg.cgroups:
        plan = contain.prepare(cfg.name, str(cfg.state_dir))
    else:
        plan = contain.Plan(contain.PROCESS_GROUP, "cgroups = false in the agent's configuration")
    if plan.kind == contain.PROCESS_GROUP:
        log.warning("runs are not put in cgroups (%s): a run's processes are killed by process "
                    "group, and one that calls setsid escapes; memory_max and cpu_weight fail",
                    plan.note)
    else:
        log.info("each run in a cgroup of its own (%s; limits: %s)%s", plan.kind,
                 ", ".join(plan.limits()) or "none", f"; {plan.note}" if plan.note else "")
    return plan


async def serve(cfg: AgentConfig, token: str) -> None:
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(cfg.state_dir)
    spawner = Spawner(store.output_dir)
    await spawner.start()
    plan = containment(cfg)
    runner = Runner(store, spawner, output_limit=cfg.output_limit, kill_grace=cfg.kill_grace,
                    containment=plan.to_spec(), default_user=default_user(cfg),
                    allow_agent_account=cfg.allow_agent_account)
    runner.recover()
    app = AgentAPI(cfg.name, token, store, runner, plan.health()).app()
    web_runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await web_runner.setup()
    site = web.TCPSite(web_runner, cfg.listen_host, cfg.listen_port, ssl_context=ssl_context(cfg))
    await site.start()
    scheme = "https" if cfg.tls else "http"
    log.info("agent %s listening on %s://%s:%d (epoch %d, %d run(s) in flight)", cfg.name,
             scheme, cfg.listen_host, cfg.listen_port, store.epoch(), len(runner.tracked))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner.start_watching()
    purger = loop.create_task(purge_loop(store, cfg.retention))
    try:
        await stop.wait()
    finally:
        log.info("stopping; %d run(s) left to their supervisors", len(runner.tracked))
        purger.cancel()
        await runner.finish_launches()
        await runner.stop_watching()
        await web_runner.cleanup()
        await spawner.close()
        store.close()  # commits what is queued
        plan.remove()


def run(config: str, log_level: str = "info") -> int:
    """`hasched agent run`: returns the exit status."""
    setup_logging(log_level)
    try:
        cfg = load_agent_config(config)
        if cfg.token_file is None:
            raise ConfigError(config, None, "token_file", "is required")
        token = read_token(cfg.token_file)
        default_user(cfg)  # fail now, in one line, on an unknown account
        ctx_check = ssl_context(cfg)  # fail now, in one line, on a bad certificate or key
        del ctx_check
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as e:
        print(f"{config}: tls: {e}", file=sys.stderr)
        return 2
    try:  # before anything touches the state: a second agent on it refuses, touching nothing
        lock = lock_state_dir(cfg.state_dir, "agent")
    except StateDirError as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        return 1 if isinstance(e, StateDirBusy) else 2
    try:
        asyncio.run(serve(cfg, token))
    except (OSError, StoreError) as e:  # the port is taken, the state dir is unusable...
        log.error("cannot start: %s", e)
        return 1
    finally:
        lock.release()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hasched-agent")
    parser.add_argument("--config", required=True)
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    return run(args.config, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
