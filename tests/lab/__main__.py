"""`python -m tests.lab up|down|crash NODE|poweron NODE|partition A B|heal|ssh NODE|status`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

from . import lab
from .config import NODES, node


def _partition(args: argparse.Namespace) -> None:
    if args.a == args.b:
        raise lab.LabError("partition needs two different nodes")
    lab.partition(node(args.a), node(args.b))


def _ssh(args: argparse.Namespace) -> None:
    argv = lab.ssh_argv(args.node, *args.command)
    os.execvp(argv[0], argv)


_VERBS: dict[str, Callable[[argparse.Namespace], object]] = {
    "up": lambda _: lab.up(),
    "down": lambda _: lab.down(),
    "crash": lambda args: lab.crash(node(args.node)),
    "poweron": lambda args: lab.poweron(node(args.node)),
    "partition": _partition,
    "heal": lambda _: lab.heal(),
    "ssh": _ssh,
    "status": lambda _: print(lab.status()),
}


def main(argv: list[str] | None = None) -> int:
    names = [n.name for n in NODES]
    p = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("up", help="build (cached) and boot the lab, write the inventory")
    sub.add_parser("down", help="remove everything the lab made")
    for verb in ("crash", "poweron"):
        sub.add_parser(verb).add_argument("node", choices=names)
    part = sub.add_parser("partition", help="cut traffic between two nodes")
    part.add_argument("a", choices=names)
    part.add_argument("b", choices=names)
    sub.add_parser("heal", help="undo every partition")
    ssh = sub.add_parser("ssh", help="ssh to a node from the client namespace")
    ssh.add_argument("node", choices=names)
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("status")
    args = p.parse_args(argv)
    try:
        _VERBS[args.verb](args)
    except lab.LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        print(f"lab: error: {' '.join(map(str, exc.cmd))} failed: "
              f"{detail[-1] if detail else exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
