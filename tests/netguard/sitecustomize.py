"""Network guard for subprocesses of the tests (tests/test_no_network.py).

Put this folder first on ``PYTHONPATH`` and name a log file in ``OCTSEG_NETGUARD_LOG``: Python
then imports this module at start-up (``site`` runs any ``sitecustomize``), and every attempt
of the process (and of its Python children, which inherit both variables) to resolve a host
name or to connect anywhere but loopback or a Unix socket is refused and recorded as one JSON
line in the log. Each guarded process also records that it was armed, so a test can tell a
quiet process from an unguarded one. Without ``OCTSEG_NETGUARD_LOG`` nothing is changed.

Only Python code is guarded: a native helper process (e.g. W&B's ``wandb-core``) is not.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import sys
import traceback
from typing import Any

_LOG = os.environ.get("OCTSEG_NETGUARD_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _record(event: str, **fields: Any) -> None:
    # Where the attempt came from: the innermost frames outside this module.
    frames = [f for f in traceback.extract_stack() if f.filename != __file__][-6:]
    fields.update(event=event, pid=os.getpid(), argv=sys.argv[:3])
    fields["stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in frames]
    with open(_LOG, "a") as fh:  # one short append per line: lines of processes do not mix
        fh.write(json.dumps(fields, default=str) + "\n")


def _is_local_host(host: Any) -> bool:
    if host is None or host == "":
        return True  # getaddrinfo(None, port): the local host
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%", 1)[0]  # drop an IPv6 zone
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost


def _is_local_address(family: int, address: Any) -> bool:
    if family == getattr(socket, "AF_UNIX", None) or isinstance(address, (str, bytes)):
        return True
    return isinstance(address, tuple) and _is_local_host(address[0])


def _arm() -> None:
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_create_connection = socket.create_connection
    original_getaddrinfo = socket.getaddrinfo
    original_gethostbyname = socket.gethostbyname
    original_gethostbyname_ex = socket.gethostbyname_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_local_address(self.family, address):
            _record("connect", target=address)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"network guard: {address}")
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_local_address(self.family, address):
            _record("connect_ex", target=address)
            return errno.ECONNREFUSED
        return original_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not _is_local_host(address[0]):
            _record("create_connection", target=address)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"network guard: {address}")
        return original_create_connection(address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> list:
        if not _is_local_host(host):
            _record("getaddrinfo", target=host)
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: {host}")
        return original_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        if not _is_local_host(host):
            _record("gethostbyname", target=host)
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: {host}")
        return original_gethostbyname(host)

    def gethostbyname_ex(host: str) -> tuple:
        if not _is_local_host(host):
            _record("gethostbyname_ex", target=host)
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: {host}")
        return original_gethostbyname_ex(host)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    _record("armed")


if _LOG:
    _arm()
