"""Structured logs: the run, tenant, device, pool, request and worker a log line is about, and JSON lines.

`bind(run_id=..., tenant_id=...)` sets fields for the code it wraps; `ContextFilter` copies them onto
every LogRecord; `JsonFormatter` writes one JSON object per line. A log search for one run id then
finds every line of its life, in the API and in the workers (`agentruns api|worker|beat --log-format
json`, or AGENTRUNS_LOG_FORMAT=json).

The fields live in a contextvars.ContextVar: each thread, greenlet and asyncio task sees its own.
A new thread does NOT inherit the fields of the thread that started it (threading.Thread runs its
target in an empty context): bind in the thread that logs, or start the thread with `carry(fn)` as
its target. Fields true for the whole process (the worker's node name) are set once with
`set_process_fields` and seen from every thread. A record logged with `extra={"run_id": ...}` keeps
its own value of a field over the bound one, so code that logs about another run than the bound
one (a supervisor thread watching many runs) can name it per line.
"""
from __future__ import annotations

import contextvars
import functools
import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, ParamSpec, TypeVar

# The fields a line may carry, in the order they are written.
FIELDS = ("run_id", "tenant_id", "device_id", "pool", "request_id", "worker")
FORMATS = ("text", "json")
ENV = "AGENTRUNS_LOG_FORMAT"  # how `agentruns api` tells its gunicorn processes (and create_app) the format

_EMPTY: Mapping[str, str] = {}
_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("agentruns_log_fields", default=_EMPTY)
_process_fields: dict[str, str] = {}  # replaced, never mutated: read from any thread without a lock

P = ParamSpec("P")
R = TypeVar("R")


def _clean(fields: Mapping[str, object]) -> dict[str, str]:
    """The fields as strings (UUIDs included), None ones left out; an unknown name is a TypeError."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise TypeError(f"unknown log field(s) {unknown}; known: {FIELDS}")
    return {name: str(value) for name, value in fields.items() if value is not None}


def current() -> dict[str, str]:
    """The fields a record logged here and now gets (process fields, overridden by bound ones)."""
    return {**_process_fields, **_FIELDS.get()}


def push(**fields: object) -> contextvars.Token:
    """Bind `fields` (over the ones bound already) until `reset(token)`; for hooks that cannot use `with`."""
    return _FIELDS.set({**_FIELDS.get(), **_clean(fields)})


def reset(token: contextvars.Token) -> None:
    """Undo the `push` that returned `token` (and any push made after it)."""
    _FIELDS.reset(token)


class bind:  # noqa: N801 - used like a function: `with bind(run_id=...)`
    """`with bind(run_id=run.id, tenant_id=..., device_id=..., pool=...):` every record logged inside,
    in this thread (or greenlet, or asyncio task), carries these fields. Values are made strings
    (UUIDs are fine); a None value leaves that field as it was. Nested binds add to the outer
    fields and override them by name; leaving a bind restores exactly what was bound before it.
    Names other than FIELDS raise TypeError (a typo would silently lose the field)."""

    __slots__ = ("_fields", "_tokens")

    def __init__(self, **fields: object) -> None:
        self._fields = _clean(fields)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> dict[str, str]:
        self._tokens.append(_FIELDS.set({**_FIELDS.get(), **self._fields}))
        return current()

    def __exit__(self, *exc: object) -> None:
        _FIELDS.reset(self._tokens.pop())


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, made to run with the fields bound now, in whichever thread calls it:
    `threading.Thread(target=carry(work))` gives the new thread the starter's fields."""
    fields = _FIELDS.get()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _FIELDS.set(fields)
        try:
            return fn(*args, **kwargs)
        finally:
            _FIELDS.reset(token)

    return run


def set_process_fields(**fields: object) -> None:
    """Fields every record of this process carries, from any thread (e.g. worker=NODE NAME); a None
    value removes that field. Bound fields of the same name win."""
    global _process_fields
    merged = {**_process_fields, **_clean(fields)}
    _process_fields = {k: v for k, v in merged.items() if fields.get(k, v) is not None}


class ContextFilter(logging.Filter):
    """Copies the current fields onto each record it sees (a field given with `extra=` is kept).

    Put it on handlers, not loggers: a logger's filters do not see records propagated from its children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def _scalar(value: object) -> object:
    return value if isinstance(value, (str, int, float, bool)) else str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ts (RFC 3339, UTC, ms), level, logger, message, pid,
    then those of FIELDS the record carries (bound, or given with `extra=`), exc_info and stack_info
    as text when present. Newlines inside a message are escaped, so a line is always a whole record."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not cost the line (logging would print a traceback instead)
            message = f"{record.msg!r} % {record.args!r}"
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name, "message": message,
                               "pid": record.process}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = _scalar(value)
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines (with the bound fields) to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    make_json(handler)
    return handler


def make_json(handler: logging.Handler) -> None:
    """Make an existing handler (gunicorn's, say) write JSON lines with the bound fields."""
    handler.setFormatter(JsonFormatter())
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())


_MARK = "_agentruns_json"


def configure_json(level: int | str = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send every record that reaches the root logger (Python warnings too) to a JSON-lines handler on
    `stream` (stderr), at `level` and above; a second call only sets the level."""
    root = logging.getLogger()
    if not any(getattr(h, _MARK, False) for h in root.handlers):
        handler = json_handler(stream)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
