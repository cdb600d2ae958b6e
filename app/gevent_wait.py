"""psycopg's wait for a query's result, made cheap under gunicorn's gevent workers.

With `select` monkey-patched, psycopg waits through gevent's `select.poll` emulation: per wait a poll
object, its watchers, a result object and a timeout, a large share of the API's CPU per statement
(issue #16's profile, docs/profiles-api.md). Waiting for one direction on one socket needs one
libev watcher: gevent's own `wait_read` / `wait_write`. Waits with a deadline or for both
directions (rare: connection setup, cancel, a large query being sent) keep psycopg's own function.
"""
from __future__ import annotations

from typing import Any

_installed = False


def install() -> bool:
    """Use the gevent wait in this process if `select` is gevent's; returns whether it is in use."""
    global _installed
    if _installed:
        return True
    try:
        from gevent.monkey import is_module_patched
    except ImportError:
        return False
    if not is_module_patched("select"):
        return False
    from gevent.socket import wait_read, wait_write
    from psycopg import waiting

    fallback = waiting.wait
    wait_r, wait_w = waiting.WAIT_R, waiting.WAIT_W
    ready_r, ready_w = waiting.READY_R, waiting.READY_W

    def wait(gen: Any, fileno: int, interval: float = 0.0, timeout: float | None = None) -> Any:
        if timeout is not None:
            return fallback(gen, fileno, interval=interval, timeout=timeout)
        try:
            s = next(gen)
            while True:
                if s == wait_r:
                    wait_read(fileno)
                    s = gen.send(ready_r)
                elif s == wait_w:
                    wait_write(fileno)
                    s = gen.send(ready_w)
                else:  # both directions: psycopg's own loop from here on
                    return fallback(_resume(gen, s), fileno, interval=interval)
        except StopIteration as ex:
            return ex.value

    waiting.wait = wait
    _installed = True
    return True


def _resume(gen: Any, s: Any) -> Any:
    """`gen`, whose wait state `s` was already taken: yields it again, then delegates."""
    while True:
        ready = yield s
        try:
            s = gen.send(ready)
        except StopIteration as ex:
            return ex.value
