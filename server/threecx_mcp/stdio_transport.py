"""stdio: serve until stdin ends or a signal arrives, and stop within seconds either way."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Self

import anyio
from mcp.server.mcpserver import MCPServer

logger = logging.getLogger(__name__)


def serve_stdio(server: MCPServer) -> None:
    """Serve stdio until stdin ends or SIGINT/SIGTERM arrives, then stop within seconds.

    The SDK reads stdin in a worker thread, and a task group cannot finish while that thread is
    blocked in a read: on SIGINT the tool calls were cancelled (their journal records settled) but
    the process stayed, deaf, until the client closed the pipe; SIGTERM killed it mid-write. So the
    signals are received here, and the read is ended by a relay in front of fd 0.
    """
    if sys.platform == "win32":  # no POSIX signal handlers or socket fds at fd 0: the SDK's own loop
        server.run("stdio")
        return
    with StdinRelay() as stdin:

        async def serve_until_signalled() -> None:
            serving = anyio.CancelScope()

            async def serve() -> None:
                with serving:
                    await server.run_stdio_async()

            def stop() -> None:
                serving.cancel()  # tool calls are cancelled, and settle their journal records
                stdin.end()  # so that the SDK's stdin reader, and with it the server, can finish

            await until_signalled(serve, stop)

        anyio.run(serve_until_signalled)


async def until_signalled(serve: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
    """Run `serve` until it returns; the first SIGINT or SIGTERM calls `stop`, which makes it return."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for received in signals:
                    logger.info("%s received: stopping", signal.Signals(received).name)
                    stop()
                    return

        group.start_soon(watch)
        await serve()
        group.cancel_scope.cancel()


class StdinRelay:
    """Feed fd 0 from a socket that a daemon thread fills from the real stdin.

    Shutting the socket's read side wakes a thread blocked reading it with end-of-file, which no
    operation on a pipe can do; the daemon thread left blocked on the real stdin does not keep the
    process alive. No descriptor is closed while another thread may use it, so none can be reused
    under a reader.
    """

    def __enter__(self) -> Self:
        self._wire = os.dup(0)
        self._inner, outer = socket.socketpair()
        os.dup2(self._inner.fileno(), 0)
        threading.Thread(target=self._pump, args=(outer,), name="stdin relay", daemon=True).start()
        return self

    def _pump(self, outer: socket.socket) -> None:
        with outer:
            try:
                while data := os.read(self._wire, 65_536):
                    outer.sendall(data)
            except OSError:  # the read side was shut: nobody listens any more
                pass

    def end(self) -> None:
        """Make the reader of fd 0 see end-of-file now."""
        with contextlib.suppress(OSError):
            self._inner.shutdown(socket.SHUT_RD)

    def __exit__(self, *exc: object) -> None:
        self.end()
        os.dup2(self._wire, 0)
        self._inner.close()  # the daemon thread may still block on the wire: that one stays open
