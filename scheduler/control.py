"""The local control socket: JSON lines for Pacemaker's resource agent and `hasched ctl`.

`<run_dir>/control.sock`, mode 0600 in a 0700 directory; on top of the file modes the peer's uid
(SO_PEERCRED) must be root or the daemon's own uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from scheduler.protocol import MAX_EPOCH
from scheduler.service import Service
from scheduler.units import check_int

log = logging.getLogger("hasched.control")

SOCKET_NAME = "control.sock"
LEVELS = ("debug", "info", "warning", "error")
MAX_LINE = 64 * 1024


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


async def handle_request(service: Service, req: Any) -> dict[str, Any]:
    """One request object → one answer object (never raises for a client's mistake)."""
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        return {"ok": False, "error": "request must be a JSON object with a string 'op'"}
    op = req["op"]
    log.debug("control request %r", op[:40])
    if op == "status":
        return {"ok": True, **service.status()}
    if op == "check":
        res = service.check()
        if res.get("state_store") != "ok":
            return {"ok": False, "error": f"state store: {res.get('state_store')}", **res}
        return {"ok": True, **res}
    if op == "promote":
        try:
            epoch = check_int(req.get("epoch"), high=MAX_EPOCH)  # what an agent accepts
        except ValueError as e:
            return {"ok": False, "error": f"field 'epoch': {e}"}
        return {"ok": True, **await service.promote(epoch)}
    if op == "demote":
        return {"ok": True, **await service.demote()}
    if op == "reload":
        answer = await service.reload()
        if answer.get("errors"):  # nothing changed: say so, and why, in the answer
            return {"ok": False, "error": f"reload failed with {len(answer['errors'])} "
                    "error(s); the jobs in force are unchanged", **answer}
        return {"ok": True, **answer}
    if op == "log-level":
        level = req.get("level")
        if level not in LEVELS:
            return {"ok": False, "error": f"field 'level': must be one of {', '.join(LEVELS)}"}
        service.set_log_level(level)
        return {"ok": True, "level": level}
    return {"ok": False, "error": f"unknown op {op!r}"}


class ControlServer:
    def __init__(self, service: Service, run_dir: Path) -> None:
        self.service = service
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / SOCKET_NAME
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            if uid not in (0, os.getuid()):
                log.warning("control socket: refused peer uid %d", uid)
                # Take the request line off the socket unparsed, so that the client's write
                # cannot fail on a closed socket and it reads this refusal, not a broken pipe.
                with contextlib.suppress(ValueError, asyncio.LimitOverrunError, TimeoutError):
                    await asyncio.wait_for(reader.readline(), 2)
                answer: dict[str, Any] = {"ok": False, "error": f"uid {uid} is not allowed"}
            else:
                try:
                    line = await asyncio.wait_for(reader.readline(), 10)
                    req = json.loads(line)
                except (ValueError, asyncio.LimitOverrunError) as e:
                    req = None
                    answer = {"ok": False, "error": f"bad JSON: {' '.join(str(e).split())}"}
                except TimeoutError:
                    req = None
                    answer = {"ok": False, "error": "no request line within 10s"}
                if req is not None:
                    try:
                        answer = await handle_request(self.service, req)
                    except Exception as e:  # the daemon must survive any one request
                        log.exception("control op failed")
                        answer = {"ok": False, "error": " ".join(str(e).split()) or repr(e)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def request(path: str | Path, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Client side (used by `hasched ctl`): one request, one answer. Raises OSError when nothing
    listens, ValueError on a garbled answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
