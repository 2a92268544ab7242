"""The runtime dependencies in setup.cfg are what the package imports: a library only the tests
or the benchmarks use belongs in the `test` extra, not on every scheduler and agent host."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _requirements(section: str, key: str) -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg[section][key].split("\n")
    return {re.split(r"[<>=!~ \[;]", line.strip())[0].lower().replace("-", "_")
            for line in lines if line.strip()}


def _third_party_imports(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m.lower() for m in found
            if m not in sys.stdlib_module_names and m not in ("scheduler", "__future__")}


def test_install_requires_is_what_the_package_imports() -> None:
    assert _requirements("options", "install_requires") == _third_party_imports(REPO / "scheduler")
