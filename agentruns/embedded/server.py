"""What the embedded servers share: the EmbeddedServer handle, the owner record in its data dir, and
where pip-shipped binaries live."""
from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentruns.embedded.processes import start_time

log = logging.getLogger(__name__)

OWNER_FILE = "agentruns-owner.json"


@dataclass(eq=False)
class EmbeddedServer:
    """A running server. `stop()` is idempotent; a `with` block stops it on exit."""

    name: str
    url: str
    pid: int
    port: int
    data_dir: Path
    log_path: Path
    _stop: Callable[[], None] = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _creator_pid: int = field(default_factory=os.getpid, repr=False)

    def stop(self) -> None:
        """Stop the server and wait until it is gone (once; later calls do nothing)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self._stop_at_exit)
        started = time.monotonic()
        self._stop()
        (self.data_dir / OWNER_FILE).unlink(missing_ok=True)
        log.info("stopped %s (pid %s) in %.2f s", self.name, self.pid, time.monotonic() - started)

    def _stop_at_exit(self) -> None:
        # A forked child (Celery prefork, multiprocessing) inherits the hook but does not own the server.
        if os.getpid() == self._creator_pid:
            self.stop()

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def register(server: EmbeddedServer) -> EmbeddedServer:
    """Write the owner record (this process and the server's pid) and stop the server at interpreter exit."""
    record = {"owner_pid": os.getpid(), "owner_start": start_time(os.getpid()), "server_pid": server.pid}
    (server.data_dir / OWNER_FILE).write_text(json.dumps(record))
    atexit.register(server._stop_at_exit)
    return server


def check_owner(data_dir: Path) -> int | None:
    """Refuse a data dir whose owning process still runs; else return the leftover server pid."""
    try:
        record = json.loads((data_dir / OWNER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    owner = record.get("owner_pid")
    # Compare start times too: after a reboot or in a container, pids get reused.
    if owner and start_time(owner) is not None and start_time(owner) == record.get("owner_start"):
        raise RuntimeError(f"{data_dir} is in use by a server started by process {owner}, which is "
                           "still running; stop it first or use another data dir")
    return record.get("server_pid")


def package_dir(name: str) -> Path | None:
    """Where the installed package `name` lives, or None (found without importing it)."""
    spec = importlib.util.find_spec(name)  # no import: pgserver's import has side effects
    if spec and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None
