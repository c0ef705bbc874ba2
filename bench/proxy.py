"""A TCP proxy in front of PostgreSQL that counts round trips, whatever the client library does.

A round trip is a turn of the conversation: the client sends after the server has answered.
Counting turns on the wire, not statements in a driver, counts what a client really waits for:
a BEGIN sent on its own is one, a pipeline of three statements sent at once is one, a
statement sent by any connection of any process (the worker's heartbeat, its claim) is one.
Protocol messages are not parsed, so it works for any driver and any protocol mode.

Given a latency, it holds each answer back that long before passing it on: a database one
network hop away, where every round trip costs what a turn does here plus the latency.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from types import TracebackType


class Conversation:
    """One client connection's turns: who spoke last decides whether the client starts one."""

    def __init__(self) -> None:
        self.turns = 0
        self.server_spoke_last = True

    def client_sent(self) -> int:
        """A new turn when the server spoke since the client last did."""
        if self.server_spoke_last:
            self.server_spoke_last = False
            self.turns += 1
            return 1
        return 0

    def server_sent(self) -> None:
        """The server answered (its greeting, a result, a ReadyForQuery)."""
        self.server_spoke_last = True


class CountingProxy:
    """Listens on a free local port and forwards every connection to `host:port`."""

    def __init__(self, host: str, port: int, latency: float = 0.0) -> None:
        self.target = (host, port)
        self.latency = latency
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._round_trips = 0
        self._bytes = 0
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def round_trips(self) -> int:
        """Turns of every connection since the last reset."""
        with self._lock:
            return self._round_trips

    @property
    def client_bytes(self) -> int:
        """Bytes clients sent since the last reset."""
        with self._lock:
            return self._bytes

    def reset(self) -> None:
        """Start counting again from zero."""
        with self._lock:
            self._round_trips = 0
            self._bytes = 0

    def __enter__(self) -> CountingProxy:
        thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._relay, args=(client, server), name="proxy-relay", daemon=True
            )
            thread.start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        """Both directions of one connection in one thread, so their order is the wire's."""
        conversation = Conversation()
        with selectors.DefaultSelector() as selector, client, server:
            selector.register(client, selectors.EVENT_READ, server)
            selector.register(server, selectors.EVENT_READ, client)
            while not self._closing.is_set():
                for key, _ in selector.select(timeout=0.5):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if source is client:
                        with self._lock:
                            self._round_trips += conversation.client_sent()
                            self._bytes += len(data)
                    else:
                        if self.latency and not conversation.server_spoke_last:
                            time.sleep(self.latency)  # once per answer, at its first bytes
                        conversation.server_sent()
                    key.data.sendall(data)
