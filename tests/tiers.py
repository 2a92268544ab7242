"""Print one line per test tier from the JSON lines the tiers plugin wrote, and judge them.

    python -m tests.tiers REPORT TIER [TIER ...]

A tier fails when it is absent from REPORT (its pytest never finished), ran no test, skipped any,
or failed any. Exit status 1 when any tier failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def judge(line: dict | None, tier: str) -> tuple[bool, str]:
    if line is None:
        return False, f"{tier:<12} no report: its pytest did not finish"
    text = (f"{tier:<12} {line['run']:>4} run, {line['passed']:>4} passed, "
            f"{line['failed']:>3} failed, {line['skipped']:>3} skipped")
    if line["run"] == 0:
        return False, text + "  FAIL: no test ran"
    if line["skipped"] or line["failed"] or line["exit"] != 0:
        return False, text + "  FAIL"
    return True, text + "  ok"


def main(argv: list[str]) -> int:
    report, tiers = Path(argv[0]), argv[1:]
    lines = {}
    if report.exists():
        for raw in report.read_text().splitlines():
            entry = json.loads(raw)
            lines[entry["tier"]] = entry
    ok = True
    print("== tiers")
    for tier in tiers:
        good, text = judge(lines.get(tier), tier)
        ok &= good
        print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
