"""`secret_env`: a job gets the value, the API and `jobs show` never show it."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import API_TOKEN, Lab, hasched, job_toml, wait_for

pytestmark = pytest.mark.integration

SECRET = "hunter2-correct-horse-battery"


def api_get(port: int, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def test_secret_env_reaches_the_job_and_never_the_api(lab: Lab, tmp_path: Path) -> None:
    lab.agent("a1")
    secret = tmp_path / "db.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    lab.job("db", job_toml("db", every="1h", agent="a1", command='echo "pw=$DB_PASSWORD"')
            + f'env = {{ LANG = "C" }}\nsecret_env = {{ DB_PASSWORD = {{ file = "{secret}" }} }}\n')
    s = lab.scheduler("a")
    listing, one = api_get(s.port, "/v1/jobs"), api_get(s.port, "/v1/jobs/db")
    assert SECRET.encode() not in listing and SECRET.encode() not in one
    assert json.loads(one)["secret_env"] == {"DB_PASSWORD": "<secret>"}
    assert json.loads(one)["env"] == {"LANG": "C"}
    shown = subprocess.run(hasched("jobs", "show", "db", "--url", f"http://127.0.0.1:{s.port}",
                                   "--token-file", str(s.dir / "api-tokens")),
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "<secret>" in shown.stdout and SECRET not in shown.stdout

    run = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{s.port}/v1/jobs/db/run", data=b"", method="POST",
        headers={"Authorization": f"Bearer {API_TOKEN}"}), timeout=60).read())["run"]
    wait_for("the manual run to succeed", lambda: json.loads(
        api_get(s.port, f"/v1/runs/{run['run_id']}"))["state"] == "succeeded")
    output = api_get(s.port, f"/v1/runs/{run['run_id']}/output").decode()
    assert output == f"pw={SECRET}\n"
    assert s.proc is not None and SECRET not in s.proc.logtext()

    # a secret that cannot be read fails the run, naming the variable and the file
    secret.unlink()
    run = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{s.port}/v1/jobs/db/run", data=b"", method="POST",
        headers={"Authorization": f"Bearer {API_TOKEN}"}), timeout=60).read())["run"]
    failed = wait_for("the run without its secret to fail", lambda: (
        r if (r := json.loads(api_get(s.port, f"/v1/runs/{run['run_id']}")))["state"] == "failed"
        else None))
    assert failed["reason"] == (f"secret_env.DB_PASSWORD: cannot read {secret}: No such file or "
                                "directory")
