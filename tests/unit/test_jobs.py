import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from scheduler.calendars import Calendar
from scheduler.jobfiles import load_job_file, load_jobs_dir, validate_path
from scheduler.jobs import Job, Misfire, Retries, job_to_dict
from scheduler.jobtable import FIELDS
from scheduler.triggers import CronTrigger

pytestmark = pytest.mark.unit

FULL = """\
[calendars.workdays]
weekdays = ["mon", "tue", "wed", "thu", "fri"]
exclude = ["2026-12-25"]

[job.extract]
command = ["/bin/true"]
every = "1h"
pool = "linux"

[job.nightly-backup]
command = ["/usr/local/bin/backup", "--full"]
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
agent = "db1"
timeout = "2h"
retries = { count = 3, delay = "5m" }
concurrency = "forbid"
misfire = { policy = "run-once", grace = "1h" }
after = ["extract"]
calendar = "workdays"
env = { LANG = "C" }
cwd = "/srv"
user = "backup"
memory_max = "512MiB"
cpu_weight = 50
description = "full backup"
"""

AGENTS = {"db1", "db2"}
POOLS = {"linux"}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_full_example_loads(tmp_path):
    path = write(tmp_path, "a.toml", FULL)
    jobs, errors = load_job_file(path, agents=AGENTS, pools=POOLS)
    assert errors == []
    backup = {j.name: j for j in jobs}["nightly-backup"]
    workdays = Calendar("workdays", frozenset(range(5)), frozenset({date(2026, 12, 25)}))
    assert backup == Job(
        name="nightly-backup", command=("/usr/local/bin/backup", "--full"),
        trigger=CronTrigger("30 2 * * *", "Europe/Berlin", workdays),
        timezone="Europe/Berlin", agent="db1", pool=None, timeout=7200.0,
        retries=Retries(3, 300.0), concurrency="forbid", misfire=Misfire("run-once", 3600.0),
        after=("extract",), calendar="workdays", env={"LANG": "C"}, cwd="/srv", user="backup",
        memory_max=512 * 1024 * 1024, cpu_weight=50, description="full backup",
        source=f"{path}:10")
    assert backup.trigger.next_after(datetime(2026, 12, 24, 2, tzinfo=UTC)) == \
        datetime(2026, 12, 28, 1, 30, tzinfo=UTC)  # 25th excluded, then a weekend
    as_dict = job_to_dict(backup)
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["schedule"] == "30 2 * * *" and as_dict["env"] == {"LANG": "C"}
    assert (as_dict["memory_max"], as_dict["cpu_weight"]) == (512 * 1024 * 1024, 50)


def test_defaults(tmp_path):
    path = write(tmp_path, "a.toml", '[job.j]\ncommand = ["x"]\nat = "2026-12-01T08:00"\n'
                                      'pool = "p"\n')
    (job,), errors = load_job_file(path)
    assert errors == []
    assert (job.timezone, job.timeout, job.retries, job.concurrency, job.misfire, job.after,
            job.calendar, dict(job.env), job.cwd, job.user, job.description) == (
        "UTC", None, Retries(0, 60.0), "forbid", Misfire("run-once", 3600.0), (), None, {},
        None, None, "")


BASE = '[job.j]\ncommand = ["/bin/true"]\nschedule = "* * * * *"\nagent = "db1"\n'


@pytest.mark.parametrize("text, expected", [
    ('[job.j]\ncommand = ["/bin/true"\n', ["2: syntax: unclosed array (at end of file)"]),
    (BASE + 'colour = "red"\n',
     [f"5: colour: unknown field; expected one of: {', '.join(FIELDS)}"]),
    (BASE.replace("* * * * *", "61 * * * *"),
     ["3: schedule: bad cron expression '61 * * * *': minute field '61' is out of range: "
      "61 is not in 0-59"]),
    (BASE.replace("* * * * *", "0 0 * * * *"),
     ["3: schedule: not a cron expression: '0 0 * * * *' (want 5 fields: minute hour "
      "day-of-month month day-of-week, or @hourly/@daily/@weekly/...)"]),
    (BASE + 'timezone = "Mars/Olympus"\n',
     ["5: timezone: unknown time zone 'Mars/Olympus' (use an IANA name like Europe/Berlin)"]),
    (BASE.replace("db1", "db9"), ["4: agent: unknown agent 'db9'; known: db1, db2"]),
    (BASE + 'pool = "gpu"\n',
     ["5: pool: give exactly one of agent, pool (got both)",
      "5: pool: unknown pool 'gpu'; known: linux"]),
    (BASE + 'every = "5m"\n',
     ["5: every: give exactly one of schedule, every, at (got schedule, every)"]),
    ('[job.j]\nschedule = "@daily"\nagent = "db1"\n',
     ["1: job.j: missing field 'command'; e.g. command = [\"/usr/local/bin/backup\", \"--full\"]"]),
    (BASE.replace('["/bin/true"]', '"/bin/true --now"'),
     ["2: command: must be a list of strings, not a plain string; "
      "e.g. command = [\"/usr/local/bin/backup\", \"--full\"]"]),
    (BASE + 'retries = { count = -1, delay = "5m" }\n',
     ["5: retries.count: must be an integer from 0 to 1000, got -1"]),
    (BASE + 'retries = { count = 1, pause = "5m" }\n',
     ["5: retries.pause: unknown field; expected one of: count, delay"]),
    (BASE + 'timeout = "5x"\n',
     ["5: timeout: not a duration: '5x' (use e.g. 30s, 5m, 2h, 1d)"]),
    (BASE + 'timeout = "3700d"\n', ["5: timeout: must be at most 3660d (ten years)"]),
    (BASE + '[job.j.misfire]\npolicy = "sometimes"\ngrace = "1y"\n',
     ["6: misfire.policy: must be one of: run-once, run-all, skip; got 'sometimes'",
      "7: misfire.grace: not a duration: '1y' (use e.g. 30s, 5m, 2h, 1d)"]),
    (BASE + 'concurrency = "never"\n',
     ["5: concurrency: must be one of: forbid, allow, replace; got 'never'"]),
    (BASE + 'calendar = "holidays"\n', ["5: calendar: unknown calendar 'holidays'; known: none"]),
    ('[job.j]\ncommand = ["x"]\nagent = "db1"\n',
     ["1: job.j: missing field: give exactly one of schedule, every, at"]),
    ('[job."bad name"]\ncommand = ["x"]\nevery = 60\nagent = "db1"\n',
     ["1: job.bad name: not a valid job name (letters, digits, '.', '_', '-'; "
      "starting with a letter or digit; at most 128)"]),
    (BASE + 'env = { LANG = 1 }\n',
     ['5: env: must be a table of strings, e.g. env = { LANG = "C" }']),
    ('[jobs.j]\n', ["1: jobs: unknown table; expected [job.NAME] or [calendars.NAME]"]),
    (BASE + 'memory_max = "lots"\n',
     ["5: memory_max: not a size: 'lots' (use e.g. 512KiB, 10MiB, 1GiB or bytes)"]),
    (BASE + 'memory_max = "1KiB"\n', ["5: memory_max: must be between 1MiB and 1024TiB"]),
    (BASE + 'cpu_weight = 0\n',
     ["5: cpu_weight: must be an integer from 1 to 10000 (100: the default share)"]),
    (BASE + 'cpu_weight = "high"\n',
     ["5: cpu_weight: must be an integer from 1 to 10000 (100: the default share)"]),
    (BASE + 'cwd = "srv"\n', ["5: cwd: must be an absolute path, got 'srv'"]),
    (BASE + 'secret_env = { PW = "hunter2" }\n',
     ['5: secret_env.PW: must be { file = "/absolute/path" }, e.g. secret_env = { DB_PASSWORD = '
      '{ file = "/etc/hasched/secrets/db" } }']),
    (BASE + 'secret_env = { PW = { file = "pw.txt" } }\n',
     ["5: secret_env.PW: file must be an absolute path, got 'pw.txt'"]),
    (BASE + 'env = { PW = "x" }\nsecret_env = { PW = { file = "/pw" } }\n',
     ["6: secret_env.PW: also set in env; give it in one of env, secret_env"]),
])
def test_errors_are_one_line_with_file_line_field(tmp_path, text, expected):
    path = write(tmp_path, "bad.toml", text)
    jobs, errors = load_job_file(path, agents=AGENTS, pools=POOLS)
    assert jobs == []
    assert sorted(str(e) for e in errors) == sorted(f"{path}:{line}" for line in expected)


def test_all_errors_are_collected(tmp_path):
    path = write(tmp_path, "bad.toml", BASE + 'timeout = "5x"\n[job.k]\ncommand = "x"\nevery = 0\n'
                 'pool = "linux"\n')
    errors = validate_path(path, agents=AGENTS, pools=POOLS)
    assert [str(e) for e in errors] == [
        f"{path}:5: timeout: not a duration: '5x' (use e.g. 30s, 5m, 2h, 1d)",
        f"{path}:7: command: must be a list of strings, not a plain string; "
        "e.g. command = [\"/usr/local/bin/backup\", \"--full\"]",
        f"{path}:8: every: interval 0 is shorter than 1s",
    ]


def test_directory_dependencies_duplicates_and_bad_files(tmp_path):
    write(tmp_path, "a.toml", FULL)  # nightly-backup after extract: both here
    write(tmp_path, "b.toml", '[job.load]\ncommand = ["x"]\nevery = "1h"\npool = "linux"\n'
                              'after = ["extract", "nightly-backup"]\n')
    write(tmp_path, "c.toml", '[job.orphan]\ncommand = ["x"]\nevery = "1h"\npool = "linux"\n'
                              'after = ["nope"]\n')
    write(tmp_path, "d.toml", '[job.extract]\ncommand = ["y"]\nevery = "1h"\npool = "linux"\n')
    write(tmp_path, "e.toml",
          '[job.p]\ncommand = ["x"]\nevery = "1h"\npool = "linux"\nafter = ["q"]\n\n'
          '[job.q]\ncommand = ["x"]\nevery = "1h"\npool = "linux"\nafter = ["p"]\n')
    write(tmp_path, "notes.txt", "not a job file")
    jobs, errors = load_jobs_dir(tmp_path, agents=AGENTS, pools=POOLS)
    assert sorted(jobs) == ["extract", "load", "nightly-backup"]
    assert jobs["extract"].command == ("/bin/true",)  # the first definition wins
    assert [str(e) for e in errors] == [
        f"{tmp_path}/c.toml:5: after: unknown job 'nope'",
        f"{tmp_path}/d.toml:1: job.extract: job already defined in {tmp_path}/a.toml",
        f"{tmp_path}/e.toml:11: after: dependency cycle: p -> q -> p",
    ]
    assert validate_path(tmp_path, agents=AGENTS, pools=POOLS) == errors


def test_cycle_within_one_file(tmp_path):
    path = write(tmp_path, "a.toml",
                 '[job.a]\ncommand = ["x"]\nevery = 60\npool = "p"\nafter = ["a"]\n')
    jobs, errors = load_job_file(path)
    assert jobs == []
    assert [str(e) for e in errors] == [
        f"{path}:5: after: a job cannot run after itself",
        f"{path}:5: after: dependency cycle: a -> a"]


def test_missing_directory(tmp_path):
    errors = validate_path(tmp_path / "none")
    assert [str(e) for e in errors] == [f"{tmp_path}/none: cannot read: No such file or directory"]


def test_given_calendars_are_usable(tmp_path):
    path = write(tmp_path, "a.toml", BASE + 'calendar = "weekends"\n')
    weekends = Calendar("weekends", frozenset({5, 6}))
    (job,), errors = load_job_file(path, calendars={"weekends": weekends})
    assert errors == [] and job.trigger.calendar == weekends


def test_calendar_defined_in_a_later_file(tmp_path):
    write(tmp_path, "a.toml", BASE + 'calendar = "weekends"\n')
    write(tmp_path, "z.toml", '[calendars.weekends]\nweekdays = ["sat", "sun"]\n')
    jobs, errors = load_jobs_dir(tmp_path, agents=AGENTS)
    assert errors == []
    assert jobs["j"].trigger.calendar == Calendar("weekends", frozenset({5, 6}))


def test_jobs_are_hashable_and_read_only(tmp_path):
    path = write(tmp_path, "a.toml", BASE + 'env = { LANG = "C" }\n')
    (job,), _ = load_job_file(path)
    assert job in {job}
    with pytest.raises(TypeError):
        job.env["LANG"] = "de_DE"  # type: ignore[index]


def test_secret_env_is_shown_as_secret(tmp_path):
    path = write(tmp_path, "s.toml", BASE + 'secret_env = { PW = { file = "/etc/pw" } }\n')
    jobs, errors = load_job_file(path, agents=AGENTS, pools=POOLS)
    assert errors == [] and jobs[0].secret_env == {"PW": "/etc/pw"}
    view = job_to_dict(jobs[0])
    assert view["secret_env"] == {"PW": "<secret>"} and "/etc/pw" not in json.dumps(view)
