"""`cnnkit serve`: the model, its worker thread and the app on uvicorn, bound to a socket.

    Service("runs/digits", port=8000).run()          # blocks; Ctrl-C (or SIGTERM) stops it cleanly
    with Service("runs/digits", port=0) as service:  # in a background thread, on a free port
        print(service.url)                           # http://127.0.0.1:PORT

The model is opened and the socket bound before anything is served, so a missing run or a port in use is a
one-line CnnkitError; uvicorn then serves on that socket (port 0: a free one, see `url`). Uploads live in a
private temporary folder (mode 0700) until their model call, and the folder goes when the service stops.
"""
from __future__ import annotations

import errno
import logging
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from cnnkit.errors import CnnkitError
from cnnkit.serve.app import create_app, release
from cnnkit.serve.batcher import Batcher
from cnnkit.serve.limits import Limits
from cnnkit.serve.model import ServedModel

log = logging.getLogger("cnnkit.serve")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); one line when it cannot be had."""
    if not 0 <= port <= 65535:
        raise CnnkitError(f"--port must be 0 to 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise CnnkitError(f"cannot listen on {host}:{port}: unknown host ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        reason = "the port is in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
        raise CnnkitError(f"cannot listen on {host}:{port}: {reason} (pick another with --port)") from None
    sock.set_inheritable(True)
    return sock


class Service:
    """One served model: ServedModel + Batcher (the worker thread that owns the model) + app + uvicorn."""

    def __init__(self, target: str | Path, host: str = "127.0.0.1", port: int = 8000, *,
                 limits: Limits | None = None, precision: str = "auto", runtime: str | None = None,
                 options: dict | None = None, log_level: str = "info"):
        if log_level not in LOG_LEVELS:
            raise CnnkitError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        self.limits = limits or Limits()
        # a bad run fails before the port is taken
        self.model = ServedModel(target, precision=precision, runtime=runtime, options=options)
        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.folder = Path(tempfile.mkdtemp(prefix="cnnkit-serve-"))  # mode 0700
        self.batcher = Batcher(self.model.predict, max_batch=self.limits.max_batch, max_wait_s=self.limits.max_wait_s,
                               max_queued=self.limits.max_queued, release=release)
        self._on_ready: Callable[[], None] | None = None
        self.app = create_app(self.model, self.batcher, self.limits, self.folder, on_ready=self._ready)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=self.port, log_level=log_level,
                                                    timeout_graceful_shutdown=10, server_header=False))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _ready(self) -> None:
        if self._on_ready is not None:
            self._on_ready()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in this (the main) thread until Ctrl-C or SIGTERM, calling `on_ready()` once requests are served
        (and Ctrl-C is the server's); then finish the requests in flight and clean up."""
        self._on_ready = on_ready
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # uvicorn re-raises it after its shutdown
        self.batcher.start()
        try:
            self.server.run(sockets=[self.sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def start(self, timeout: float = 30.0) -> Service:
        """Serve in a background thread; returns once the server accepts requests."""
        self.batcher.start()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="cnnkit-serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise CnnkitError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop a server started with start(): in-flight requests finish, then everything is cleaned up."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
        self.close()

    def close(self) -> None:
        """Stop the worker thread, close the socket, delete the upload folder; calling it again does nothing."""
        self.batcher.stop()
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
