"""Serve an ASGI app on a loopback port from a background thread (tests, benchmarks, --sandbox)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

import uvicorn
from starlette.types import ASGIApp


class LoopbackServer:
    """`with LoopbackServer(app) as server: server.url` - uvicorn on 127.0.0.1 and a free port."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, tls: tuple[str, str] | None = None
    ) -> None:
        """`tls` is (certificate file, key file) to serve https instead of http."""
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every keep-alive answer waits ~40 ms for a delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self.scheme = "https" if tls else "http"
        certfile, keyfile = tls or (None, None)
        config = uvicorn.Config(
            app,
            interface="asgi3",
            log_level="error",  # a TLS probe of a plain port (doctor's scheme check) is not worth a warning
            lifespan="auto",
            access_log=False,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
