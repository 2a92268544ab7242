"""A guard against a dependency installed by hand: every external program that the tests, the
lab, the benchmarks, the OCF agent and the Makefiles call must come from a Debian package that
deps/debian-packages.txt lists, or from one that every minimal Debian has (priority required or
important). It reads the calls from the source, so a new tool in a test without its package
fails here on any machine, fresh or not.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from tests import deps

REPO = deps.REPO
PY_SOURCES = ["tests", "bench", "resource-agents"]
SHELL_SOURCES = ["Makefile", "lab.mk", ".ci/run", "deps/install", "resource-agents/install.sh"]
# Calls that start a program: subprocess's, our helpers' (sh, _run, spawn), and the checks
# that one is installed (shutil.which, deps.need). Methods of other objects (testinfra's
# host.run, an agent client's call) run on a lab node or are API calls, not host programs.
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "sh", "_run", "spawn", "need",
           "which", "execvp"}
# These take the program as a plain string (sh("pcs", ...), shutil.which("x")); the others take
# an argv list, or a string only with shell=True: a test's own run("scheduler", ...) wrapper
# around `hasched` is not a program called "scheduler".
STRING_RUNNERS = {"sh", "spawn", "need", "which"}
IN_NAMESPACE = {"in_ns"}  # in_ns(NETNS, PROGRAM, ...): a host program run in a lab namespace
LISTS = {"REQUIRED"}  # module constants that list programs a preflight checks
RECEIVERS = {None, "subprocess", "shutil", "deps", "os"}
SHELL_WORDS = {"if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "case",
               "esac", "exit", "set", "cd", "echo", "test", "[", "]", "true", "false", "read",
               "export", "exec", "command", "mapfile", "local", "return", "shift", "rm", "touch",
               "printf", "time", "env", "!", "{", "}", "[[", "]]", "trap", "wait", "status",
               "missing+", "rc", ":", "sleep", "id", "cat", "mkdir", "cp", "ln", "install",
               "chmod", "awk", "sed", "grep", "ls", "dirname"}
PROGRAM = re.compile(r"^[a-z][a-z0-9_.+-]*$")


def _callee(func: ast.expr) -> tuple[str | None, str | None]:
    if isinstance(func, ast.Attribute):
        receiver = func.value.id if isinstance(func.value, ast.Name) else "?"
        return func.attr, receiver
    return getattr(func, "id", None), None


def _program(arg: ast.expr) -> str | None:
    if isinstance(arg, ast.List | ast.Tuple) and arg.elts:
        arg = arg.elts[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.strip():
        return arg.value.split()[0]
    return None


def python_calls(path: Path) -> Iterator[tuple[str, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and any(
                isinstance(t, ast.Name) and t.id in LISTS for t in node.targets):
            for element in node.value.elts:
                if (program := _program(element)) and PROGRAM.match(program):
                    yield program, f"{path.relative_to(REPO)}:{node.lineno}"
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name, receiver = _callee(node.func)
        if name in IN_NAMESPACE and len(node.args) > 1 and (program := _program(node.args[1])):
            yield program, f"{path.relative_to(REPO)}:{node.lineno}"
        if name not in RUNNERS or receiver not in RECEIVERS:
            continue
        shell = any(k.arg == "shell" for k in node.keywords)
        for arg in node.args if name == "need" else node.args[:1]:
            if isinstance(arg, ast.Constant) and name not in STRING_RUNNERS and not shell:
                continue
            program = _program(arg)
            if program and PROGRAM.match(program):
                yield program, f"{path.relative_to(REPO)}:{node.lineno}"


def shell_calls(path: Path) -> Iterator[tuple[str, str]]:
    makefile = path.name in ("Makefile", "lab.mk")
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if makefile:
            if not line.startswith("\t"):
                continue
            # A recipe's own prefixes, and make's variables ($(PY), $(abspath ...)); $$( is the
            # shell's command substitution.
            line = re.sub(r"^\t[@+-]*", "", line).replace("$$(", "`")
            while re.search(r"\$\([^()]*\)", line):
                line = re.sub(r"\$\([^()]*\)", "", line)
        line = re.sub(r"'[^']*'|\"[^\"]*\"", '""', line.split(" #", 1)[0]).strip()
        if line.startswith("#"):
            continue
        for segment in re.split(r"\$\(|`|\|\||&&|[;|()]", line):
            words = segment.split()
            while words and (words[0] in ("then", "do", "else", "if", "!", "exec", "time", "env",
                                          "command", "-v") or "=" in words[0]):
                words.pop(0)
            if words[:3] == ["ip", "netns", "exec"] and len(words) > 4:
                words = words[4:]
            if words and PROGRAM.match(words[0]) and words[0] not in SHELL_WORDS:
                yield words[0], f"{path.relative_to(REPO)}:{lineno}"


def called_programs() -> dict[str, str]:
    """Each program called on this host, with one place that calls it."""
    found: dict[str, str] = {}
    for top in PY_SOURCES:
        for path in sorted((REPO / top).rglob("*")):
            if path.suffix == ".py" or path.name == "scheduler" and path.is_file():
                for program, where in python_calls(path):
                    found.setdefault(program, where)
    for name in SHELL_SOURCES:
        for program, where in shell_calls(REPO / name):
            found.setdefault(program, where)
    for pkg in deps.packages():
        for program in pkg.programs:
            found.setdefault(program, "deps/debian-packages.txt")
    return found


@cache
def owner(path: str) -> str | None:
    """The Debian package that installed `path` (trying both sides of the /usr merge)."""
    real = os.path.realpath(path)
    candidates = [path, real] + [p.replace("/usr/", "/", 1) if p.startswith("/usr/")
                                 else "/usr" + p for p in (path, real)]
    for candidate in candidates:
        done = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


@cache
def minimal(package: str) -> bool:
    """Part of every minimal Debian install: Essential, or priority required or important."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", package],
                         capture_output=True, text=True).stdout.split()
    return "yes" in out or bool({"required", "important"} & set(out))


def listed() -> set[str]:
    return {pkg.name for pkg in deps.packages()}


def test_every_listed_package_is_installed() -> None:
    missing = [p for p in sorted(listed()) if subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", p],
        capture_output=True, text=True).stdout != "installed"]
    assert not missing, f"not installed: {' '.join(missing)} (run 'make deps' as root)"


def test_the_scan_finds_the_programs_we_know_we_call() -> None:
    # If the scan stopped seeing calls, the guard below would pass with nothing to check.
    found = called_programs()
    for program in ("crm_resource", "pcs", "ocf-tester", "xmllint", "debootstrap",
                    "systemd-nspawn", "ssh", "vagrant", "openssl", "ip", "make"):
        assert program in found, f"the scan no longer sees {program}"


def test_every_program_we_call_comes_from_a_listed_or_minimal_package() -> None:
    venv_bin = Path(sys.executable).parent
    problems = []
    for program, where in sorted(called_programs().items()):
        if (venv_bin / program).exists():
            continue  # from the venv (pytest, ansible-playbook, ruff)
        path = deps.which(program) if program not in {"python3"} else "/usr/bin/python3"
        if path is None or not path.startswith(("/usr/", "/bin/", "/sbin/")):
            problems.append(f"{program} (called at {where}) is not installed from Debian here; "
                            "add its package to deps/debian-packages.txt")
            continue
        package = owner(path)
        if package is None:
            problems.append(f"{program} ({path}, called at {where}) belongs to no Debian package")
        elif package not in listed() and not minimal(package):
            problems.append(f"{program} (called at {where}) comes from {package}, which is "
                            "not in deps/debian-packages.txt")
        elif deps.package_of(program) not in (None, package):
            problems.append(f"deps/debian-packages.txt says {program} comes from "
                            f"{deps.package_of(program)}; dpkg says {package}")
    assert not problems, "\n".join(problems)


def test_vagrant_has_a_provider_for_validate() -> None:
    out = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True).stdout
    assert "vagrant-libvirt" in out, "vagrant has no provider: apt-get install vagrant-libvirt"
