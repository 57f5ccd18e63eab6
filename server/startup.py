"""What ``medhub`` settles about its process before it serves: files, descriptors, origins, port.

- :func:`make_data_dir_private`: every file the process creates is private
  (umask 077), and ``data_dir`` is a 0700 folder whose files are 0600;
  looser existing modes are tightened with a warning.
- :func:`fit_descriptors`: the soft RLIMIT_NOFILE is raised (up to the hard
  limit) to hold ``ws_max_connections`` and its headroom; when it cannot,
  ``ws_max_connections`` is lowered with a warning, or the start is refused
  (:class:`server.limits.DescriptorError`).
- :func:`with_served_origins`: ``allowed_origins`` left at its default
  becomes the origins of the address actually served.
- :func:`bind_listener`: the listening socket, bound before anything starts,
  so an address in use fails at once, with nothing said to be ready.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import stat
from pathlib import Path

import msgspec

from server.config import Settings
from server.limits import plan_descriptors, reserved_descriptors

log = logging.getLogger(__name__)

#: Left untouched by :func:`make_data_dir_private`: ``ensure_secrets`` refuses a
#: secrets file others could read (it may have been read; the operator decides).
_SECRETS_FILE = "secrets"


def make_data_dir_private(data_dir: str | os.PathLike[str]) -> list[str]:
    """Set umask 077 and make ``data_dir`` (created if missing) owner-only.

    The folder becomes 0700, and the files and folders directly inside it lose
    every group and other permission (a warning names them). Returns the names
    tightened. A mode that cannot be changed (another owner) is logged, not raised.
    """
    os.umask(0o077)
    path = Path(data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened: list[str] = []
    entries = [path, *sorted(path.iterdir())]
    for entry in entries:
        if entry.name == _SECRETS_FILE and entry.parent == path:
            continue
        try:
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode) or not mode & 0o077:
                continue
            entry.chmod(stat.S_IMODE(mode) & 0o700)
        except OSError as exc:
            log.warning(
                "cannot make a data file private",
                extra={"path": str(entry), "error": type(exc).__name__},
            )
            continue
        tightened.append("." if entry == path else entry.name)
    if tightened:
        log.warning(
            "data_dir was readable by others: made private",
            extra={"path": str(path), "tightened": tightened},
        )
    return tightened


def fit_descriptors(settings: Settings) -> Settings:
    """Raise the soft descriptor limit as needed; return settings whose caps fit it.

    Raises :class:`server.limits.DescriptorError` when even a small
    ``ws_max_connections`` does not fit (the caller refuses to start).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserved = reserved_descriptors(settings)
    plan = plan_descriptors(soft, hard, settings.ws_max_connections, reserved)
    if plan.raises(soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (plan.soft_limit, hard))
        log.info("raised the file-descriptor limit", extra={"from": soft, "to": plan.soft_limit})
    if plan.ws_max_connections < settings.ws_max_connections:
        log.warning(
            "ws_max_connections lowered to fit the file-descriptor limit; raise the limit "
            "(ulimit -n, systemd LimitNOFILE=) to serve more",
            extra={
                "configured": settings.ws_max_connections,
                "lowered_to": plan.ws_max_connections,
                "nofile_limit": plan.soft_limit,
                "reserved": reserved,
            },
        )
        settings = msgspec.structs.replace(settings, ws_max_connections=plan.ws_max_connections)
    return settings


def _origin_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def served_origins(host: str, port: int) -> list[str]:
    """The browser origins of ``http://host:port``, plus its loopback names.

    A wildcard host (``0.0.0.0``, ``::``, empty) adds no origin of its own:
    browsers elsewhere reach it under a name only the operator knows.
    """
    origins = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    if host not in ("", "0.0.0.0", "::", "127.0.0.1", "localhost"):  # noqa: S104 (a comparison)
        origins.append(f"http://{_origin_host(host)}:{port}")
    return origins


def with_served_origins(settings: Settings, host: str, port: int) -> Settings:
    """``settings`` with ``allowed_origins`` = :func:`served_origins` when left at its default."""
    if settings.allowed_origins != Settings().allowed_origins:
        return settings
    return msgspec.structs.replace(settings, allowed_origins=served_origins(host, port))


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``SO_REUSEADDR``, as uvicorn binds).

    Raises :class:`OSError` (``EADDRINUSE``, ``EACCES``, an unknown host) for
    the caller to report; nothing else has started by then.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
