"""A real Scheduler, standby, over one job file and one agent that never answers: for unit tests
of what the daemon does without any process or network."""

from __future__ import annotations

from pathlib import Path

from scheduler.config import load_scheduler_config
from scheduler.daemon import Scheduler


def standby_scheduler(tmp_path: Path, token: str) -> Scheduler:
    """The caller closes its ledger (`sched.ledger.close()`)."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "good.toml").write_text('[job.good]\ncommand = ["/bin/true"]\nevery = "1h"\n'
                                    'agent = "db1"\n')
    for name in ("db1.token", "api.tokens"):
        (tmp_path / name).write_text(token + "\n")
        (tmp_path / name).chmod(0o600)
    config = tmp_path / "scheduler.toml"
    config.write_text(f'[scheduler]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'run_dir = "{tmp_path / "run"}"\njobs_dir = "{jobs}"\n'
                      f'api_tokens_file = "{tmp_path / "api.tokens"}"\n'
                      f'[agents.db1]\nurl = "http://127.0.0.1:1"\n'
                      f'token_file = "{tmp_path / "db1.token"}"\nlabels = ["linux"]\n')
    return Scheduler(load_scheduler_config(config), "standby")
