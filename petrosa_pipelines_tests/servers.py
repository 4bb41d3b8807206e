"""Real NATS and Redis servers for tests: the local one when it answers, else a throwaway one.

Tests never skip for want of a server (``/tmp/brief/common.md``, issue 14 item 5): the server on
127.0.0.1 (or ``PETROSA_TEST_NATS_URL`` / ``PETROSA_TEST_REDIS_URL``) is used when it answers,
otherwise one is started from the installed binaries (``/usr/sbin/nats-server -js``,
``/usr/bin/redis-server``) on a free port and stopped afterwards. A binary that is missing is
installed from Debian's packages (``apt-get install -y nats-server redis-server``) when the tests
run as root with apt-get at hand, as a fresh CI machine does: once per test session, under a file
lock so that xdist workers do not race (``ensure_server_binaries``). Elsewhere the test fails
with the command to run; it never skips.

Tests share the server, so they isolate themselves: ``unique_name`` for subjects, JetStream
stream names and Redis key prefixes, and the ``nats_subject`` / ``jetstream_stream`` /
``redis_prefix`` fixtures delete what they made.

Use from a test module (or a conftest) by importing the fixtures; each is registered under its
own name whatever it is imported as, so an alias keeps ruff's F811 quiet::

    from petrosa_pipelines_tests.servers import nats_url as _nats_url  # noqa: F401

or outside pytest with the ``nats_server()`` / ``redis_server()`` context managers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

NATS_SERVER_BIN = os.environ.get("PETROSA_TEST_NATS_SERVER_BIN", "/usr/sbin/nats-server")
REDIS_SERVER_BIN = os.environ.get("PETROSA_TEST_REDIS_SERVER_BIN", "/usr/bin/redis-server")
LOCAL_NATS_URL = "nats://127.0.0.1:4222"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
START_DEADLINE_S = 30.0
#: Debian's package of each server binary
APT_PACKAGES = {"nats-server": "nats-server", "redis-server": "redis-server"}
#: where the install lock and the per-session "apt-get was tried" marker live
APT_STATE_DIR = Path(os.environ.get("PETROSA_TEST_APT_STATE_DIR", tempfile.gettempdir()))
APT_TIMEOUT_S = 900
_apt_lock = threading.Lock()
#: packages this process already tried to install (one attempt per session)
_apt_tried: set[str] = set()


class MissingServerBinaryError(RuntimeError):
    """A server binary is absent and could not be installed here (not root, no apt-get, or
    apt-get failed): the message names the packages and the command to run."""


def _binaries() -> dict[str, str]:
    """package -> binary path (read at call time: tests and env vars may change the paths)."""
    return {
        APT_PACKAGES["nats-server"]: NATS_SERVER_BIN,
        APT_PACKAGES["redis-server"]: REDIS_SERVER_BIN,
    }


def _session_id() -> str:
    """The same for every xdist worker of one run (``PYTEST_XDIST_TESTRUNUID``), else the pid."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"


def _apt_install(apt: str, packages: list[str]) -> tuple[bool, str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", *packages]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    if done.returncode != 0:  # a stale package list: refresh it once and try again
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=APT_TIMEOUT_S)
        done = subprocess.run(
            install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
        )
    tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
    return done.returncode == 0, " | ".join(tail)


def ensure_server_binaries(*packages: str) -> dict[str, str]:
    """The binaries of ``packages`` (default: both servers), installed with apt-get when
    missing and allowed (root + apt-get). One attempt per session: a file lock serialises the
    xdist workers, the first one installs, the others find the binaries (or the failure marker
    of this run) when they get the lock. Raises ``MissingServerBinaryError`` naming the
    packages when a binary is still missing; never skips."""
    paths = _binaries()
    wanted = list(packages) or list(paths)
    unknown = [p for p in wanted if p not in paths]
    if unknown:
        raise ValueError(f"unknown server packages {unknown}: one of {sorted(paths)}")

    def missing() -> list[str]:
        return [p for p in wanted if not Path(paths[p]).exists()]

    if not missing():
        return {p: paths[p] for p in wanted}
    apt = shutil.which("apt-get")
    why = ""
    if apt is None:
        why = "apt-get is not available"
    elif os.geteuid() != 0:
        why = "not running as root"
    else:
        with _apt_lock:
            APT_STATE_DIR.mkdir(parents=True, exist_ok=True)
            lock_path = APT_STATE_DIR / "petrosa-test-apt.lock"
            with open(lock_path, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be installing: wait
                try:
                    marker = APT_STATE_DIR / f"petrosa-test-apt-{_session_id()}.failed"
                    # every server package still missing, not only the one asked for: the
                    # session will want both, and apt-get runs once
                    todo = [p for p in paths if not Path(paths[p]).exists() and p not in _apt_tried]
                    if not any(p in todo for p in missing()):
                        todo = []
                    if todo and marker.exists():
                        why = f"apt-get failed earlier in this run: {marker.read_text().strip()}"
                    elif todo:
                        _apt_tried.update(todo)
                        ok, detail = _apt_install(apt, todo)
                        if not ok or missing():
                            why = f"apt-get install {' '.join(todo)} failed: {detail}"
                            marker.write_text(why + "\n")
                    elif missing():
                        why = "apt-get was already tried in this session"
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
    still = missing()
    if still:
        names = ", ".join(f"{p} ({paths[p]})" for p in still)
        raise MissingServerBinaryError(
            f"the test servers' binaries are missing: {names}, and could not be installed here "
            f"({why or 'unknown reason'}): run `sudo apt-get install -y {' '.join(still)}` "
            "(Debian's packages), or point PETROSA_TEST_NATS_URL / PETROSA_TEST_REDIS_URL at "
            "running servers (PETROSA_TEST_NATS_SERVER_BIN / PETROSA_TEST_REDIS_SERVER_BIN at "
            "the binaries)"
        )
    return {p: paths[p] for p in wanted}


def unique_name(prefix: str = "t") -> str:
    """A name no other test (or run) uses: valid as a NATS subject token and stream name."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def nats_info(url: str, timeout: float = 2.0) -> dict | None:
    """The server's INFO line (NATS protocol: the server speaks first), or None if no answer."""
    host, port = _host_port(url, 4222)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            buf = b""
            while b"\r\n" not in buf and len(buf) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        return json.loads(line[5:])
    except ValueError:
        return None


def nats_answers(url: str, *, jetstream: bool = True) -> bool:
    """True if a NATS server answers at ``url`` (with JetStream enabled when asked)."""
    info = nats_info(url)
    if info is None:
        return False
    return bool(info.get("jetstream")) or not jetstream


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """True if a Redis server answers PING at ``url`` (via the maintained client)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return False


def _wait(answers, url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while not answers(url):
        if proc.poll() is not None:
            raise RuntimeError(f"throwaway {what} exited with code {proc.returncode} ({url})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"throwaway {what} at {url} did not answer in {START_DEADLINE_S}s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_nats_server(port: int, store: str | Path) -> subprocess.Popen:
    """Start ``nats-server -js`` on ``port`` (store in ``store``) and wait until it answers;
    the caller stops it (tests that kill and restart a server on the same port)."""
    binary = ensure_server_binaries(APT_PACKAGES["nats-server"])[APT_PACKAGES["nats-server"]]
    Path(store).mkdir(parents=True, exist_ok=True)
    cmd = [binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(nats_answers, f"nats://127.0.0.1:{port}", proc, "nats-server")
    except BaseException:
        _stop(proc)
        raise
    return proc


@contextlib.contextmanager
def throwaway_nats() -> Iterator[str]:
    """A new ``nats-server -js`` on a free port with its store in a temp dir; yields its URL."""
    store = tempfile.mkdtemp(prefix="petrosa-nats-")
    port = free_port()
    try:
        proc = start_nats_server(port, store)
        try:
            yield f"nats://127.0.0.1:{port}"
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(store, ignore_errors=True)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A new ``redis-server`` (no persistence) on a free port; yields its URL."""
    pkg = APT_PACKAGES["redis-server"]
    binary = ensure_server_binaries(pkg)[pkg]
    workdir = tempfile.mkdtemp(prefix="petrosa-redis-")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    cmd = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    cmd += ["--bind", "127.0.0.1", "--dir", workdir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(redis_answers, url, proc, "redis-server")
        yield url
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    """A NATS (JetStream) URL: ``PETROSA_TEST_NATS_URL``, the local server, or a throwaway one."""
    for url in (os.environ.get("PETROSA_TEST_NATS_URL"), LOCAL_NATS_URL):
        if url and nats_answers(url):
            yield url
            return
    with throwaway_nats() as url:
        yield url


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: ``PETROSA_TEST_REDIS_URL``, the local server, or a throwaway one."""
    for url in (os.environ.get("PETROSA_TEST_REDIS_URL"), LOCAL_REDIS_URL):
        if url and redis_answers(url):
            yield url
            return
    with throwaway_redis() as url:
        yield url


# --- pytest fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session", name="nats_url")
def nats_url() -> Iterator[str]:
    """A NATS server URL with JetStream (shared: isolate with ``nats_subject``/``unique_name``)."""
    with nats_server() as url:
        yield url


@pytest.fixture(scope="session", name="redis_url")
def redis_url() -> Iterator[str]:
    """A Redis server URL (shared: isolate keys with ``redis_prefix``)."""
    with redis_server() as url:
        yield url


@pytest.fixture(name="nats_subject")
def nats_subject() -> str:
    """A subject no other test publishes on (core NATS subjects need no clean-up)."""
    # not under ``petrosa.``: a PETROSA_LIVE stream on the shared server captures ``petrosa.>``,
    # and JetStream refuses a second stream whose subjects overlap it
    return f"test.{uuid.uuid4().hex[:12]}"


async def delete_stream(url: str, name: str) -> None:
    """Delete a JetStream stream if it exists (clean-up for tests on the shared server)."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def create_stream(url: str, name: str, subjects: list[str]) -> None:
    """Create a file-backed JetStream stream ``name`` capturing ``subjects``."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        config = StreamConfig(name=name, subjects=subjects, storage=StorageType.FILE)
        await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


@pytest.fixture(name="jetstream_stream")
def jetstream_stream(nats_url: str, nats_subject: str) -> Iterator[tuple[str, str]]:
    """A fresh JetStream stream capturing ``nats_subject``; yields (stream name, subject) and
    deletes the stream (and so its consumers) afterwards."""
    import asyncio

    name = unique_name("PETROSA_TEST").upper()
    asyncio.run(create_stream(nats_url, name, [nats_subject]))
    try:
        yield name, nats_subject
    finally:
        asyncio.run(delete_stream(nats_url, name))


@pytest.fixture(name="redis_prefix")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    import redis

    prefix = f"petrosa-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
