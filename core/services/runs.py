"""Run services shared by the API views: create, read, list, cancel, events."""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Text, and_, bindparam, cast, func, inspect, literal_column, or_, select, text, tuple_, union_all
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from core import quotas, runstate
from core.config import Settings
from core.crypto import encrypt_json
from core.errors import Conflict, Invalid, NotFound
from core.messages import DEFAULT_POOL, Queued
from core.models import Device, Run, RunEvent
from core.services import webhooks
from core.services.cursor import decode_cursor, encode_cursor
from providers import get_provider


def _prompt_limit(provider: str) -> int | None:
    """Some CLIs take the prompt as one argument, which the kernel caps (MAX_ARG_STRLEN)."""
    return getattr(get_provider(provider), "max_prompt_bytes", None)


# Built once: constructing (and cache-keying) a statement costs more CPU than running it. FOR KEY
# SHARE until the run commits: a concurrent delete of the device waits and then sees the run (409),
# while other creates and device updates are not blocked.
_DEVICE = (select(Device.id, Device.kind, Device.default_cwd, Device.pool)
           .where(Device.tenant_id == bindparam("tenant_id"), Device.id == bindparam("device_id"))
           .with_for_update(read=True, key_share=True))


def create(conn: Connection, tenant_id: uuid.UUID, data: dict, request_id: str, settings: Settings) -> Run:
    """Insert a queued run after the checks that need the database (the device, its kind).

    Core statements on the caller's transaction, not the ORM unit of work (the API's hot path); the
    returned Run is transient, holding what was inserted.
    """
    webhook_url = data.get("webhook_url")
    if webhook_url:
        webhooks.check_url(webhook_url, settings, field="webhook_url")
        webhooks.ensure_per_run(conn, tenant_id, settings)
    if data.get("target_selector"):
        data = {**data, "target_id": select_device(conn, tenant_id, data["target_selector"], data["target_kind"])}
    device = conn.execute(_DEVICE, {"tenant_id": tenant_id, "device_id": data["target_id"]}).first()
    if device is None:
        raise Invalid.field("target_id", f"no device {data['target_id']!r} in this tenant")
    if data["target_kind"] and data["target_kind"] != device.kind:
        raise Invalid.field("target_kind", f"device {device.id!r} is a {device.kind}, not a {data['target_kind']}")
    limit = _prompt_over_limit(data)
    if limit is not None:
        raise Invalid.field("prompt", f"provider {data['provider']} accepts at most {limit} bytes of prompt")
    values = _values(tenant_id, data, request_id, settings, target_kind=device.kind, target_id=device.id,
                     cwd=data.get("cwd") or device.default_cwd or settings.default_cwd)
    # Last: while a quota is set it locks the tenant's creates until this transaction commits, so
    # nothing slow (the webhook URL's DNS lookup above) may come after it.
    quotas.check_run(conn, tenant_id, settings)  # the tenant's quotas, if set (429 quota_exceeded)
    created = runstate.create_queued(conn, values)
    return _queued_run(values, created, device.pool)


def one_statement_will_do(data: dict, settings: Settings) -> bool:
    """Whether create_in_one_statement() may make this run: nothing in it needs create()'s transaction
    (a webhook_url's per-run endpoint, a target_selector's choice, a quota's lock and counts)."""
    return not (data.get("webhook_url") or data.get("target_selector") or quotas.run_check_needed(settings))


def create_in_one_statement(conn: Connection, tenant_id: uuid.UUID, data: dict, request_id: str,
                            settings: Settings) -> Run | None:
    """create() for a run where one_statement_will_do(): one INSERT that reads the device itself, on an
    autocommit connection (the statement is its own transaction, the device key-share locked by it).

    None when it inserted nothing (no such device of that kind) or the prompt is over the provider's
    limit: the caller then runs create() in a transaction, which answers with exactly its errors.
    """
    if _prompt_over_limit(data) is not None:
        return None
    # The device's kind, id and default cwd come from the statement itself.
    values = _values(tenant_id, data, request_id, settings, target_kind=data["target_kind"],
                     target_id=data["target_id"], cwd=data.get("cwd") or None)
    created = runstate.create_queued_on_device(conn, values, settings.default_cwd)
    if created is None:
        return None
    values.update(target_kind=created.target_kind, target_id=created.target_id, cwd=created.cwd)
    return _queued_run(values, created, created.pool)


def _prompt_over_limit(data: dict) -> int | None:
    """The provider's prompt limit in bytes when the run's prompt is over it, else None."""
    limit = _prompt_limit(data["provider"])
    return limit if limit is not None and len(data["prompt"].encode()) > limit else None


def _values(tenant_id: uuid.UUID, data: dict, request_id: str, settings: Settings, *,
            target_kind: str | None, target_id: str, cwd: str | None) -> dict:
    """The new run's row, but for where it goes (decided with its device)."""
    return dict(
        id=uuid.uuid4(), tenant_id=tenant_id, target_kind=target_kind, target_id=target_id,
        provider=data["provider"], prompt=data["prompt"], model=data.get("model"), command=data.get("command"),
        cwd=cwd, timeout=data.get("timeout") or settings.default_timeout, metadata=data.get("metadata") or {},
        env_enc=encrypt_json(settings.secret_key, data.get("env") or {}), request_id=request_id,
        webhook_url=data.get("webhook_url"),
    )


def _queued_run(values: dict, created, pool: str) -> Run:
    """The transient Run of a row just inserted from `values` (created: its created_at, updated_at)."""
    values["metadata_"] = values.pop("metadata")
    run = _transient_run({**values, "status": runstate.QUEUED, "epoch": 0, "stdout_truncated": False,
                          "stderr_truncated": False, "created_at": created.created_at,
                          "updated_at": created.updated_at})
    run.pool = pool
    return run


_RUNS = inspect(Run).class_manager


def _transient_run(values: Mapping[Any, Any]) -> Run:
    """Run(**values), read-only use: a transient Run holding these attribute values.

    Built as the ORM builds the objects it loads (the instance, then its attribute dict), not through
    the constructor, whose instrumented setters cost 1 µs per attribute (20 µs per run, 0.4 ms per
    list page); reading it is the same. Never added to a session: it has no change history.
    """
    run = _RUNS.new_instance()
    run.__dict__.update(values)
    return run


# The least loaded matching device: one with a free slot first, then by runs in flight per slot; a
# random tie-break spreads a burst of runs over equally loaded devices.
_SELECT_DEVICE = text("""
SELECT d.id FROM devices d,
     LATERAL (SELECT count(*) AS live FROM runs r
              WHERE r.tenant_id = d.tenant_id AND r.target_id = d.id AND r.status IN ('queued', 'running')) load
WHERE d.tenant_id = :tenant_id AND d.labels @> :selector AND (CAST(:kind AS text) IS NULL OR d.kind = :kind)
ORDER BY load.live >= d.max_concurrent_runs, load.live::float / d.max_concurrent_runs, random()
LIMIT 1""").bindparams(bindparam("selector", type_=JSONB))


def select_device(conn: Connection, tenant_id: uuid.UUID, selector: dict[str, str], kind: str | None) -> str:
    """The device a run with a target_selector goes to; 422 no_matching_device when none has the labels."""
    found = conn.execute(_SELECT_DEVICE, {"tenant_id": tenant_id, "selector": selector, "kind": kind}).scalar()
    if found is None:
        what = f"{kind} " if kind else ""
        raise Invalid.field("target_selector", f"no {what}device of this tenant has the labels {selector}",
                            code="no_matching_device")
    return found


def queued(run: Run) -> Queued:
    """The runs.execute message of a run just created (to its device's pool's queue)."""
    return Queued(run.id, run.tenant_id, run.target_id, run.pool or DEFAULT_POOL)


# Every column, named as its Run attribute (metadata_), so that a row builds a transient Run.
_GET = select(*(prop.columns[0].label(prop.key) for prop in inspect(Run).column_attrs)).where(
    Run.id == bindparam("id"), Run.tenant_id == bindparam("tenant_id"))


def get(s: Session | Connection, tenant_id: uuid.UUID, run_id: str) -> Run:
    """A run of this tenant, or 404 (also for another tenant's run and for malformed ids).

    A Core query and a transient Run: cheaper than an ORM load, and callers only read it.
    """
    try:
        rid = uuid.UUID(run_id)
    except ValueError:
        raise NotFound(f"run {run_id!r} not found") from None
    row = s.execute(_GET, {"id": rid, "tenant_id": tenant_id}).first()
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return _transient_run(row._mapping)


def _metadata_filter(key: str, value: str, column=Run.metadata_, tenant_id: uuid.UUID | None = None):
    """Exact match on a top-level key of `column`, as containment.

    With tenant_id: the same test written on {"<tenant_id>": metadata} @> {"<tenant_id>": {key: value}},
    the expression of the GIN index ix_runs_tenant_metadata (migration 0009), whose entries hash the
    tenant with the key and value: the index finds exactly this tenant's matches, where an index on
    metadata alone (dropped by 0009) found every tenant's and left the planner to AND them with all
    of the tenant's rows.
    """
    options: list[object] = [value]
    try:
        parsed = json.loads(value)
        # NaN and ±Infinity (also "1e999") load as floats that JSON, and so jsonb, cannot hold.
        if isinstance(parsed, (int, bool)) or parsed is None or isinstance(parsed, float) and math.isfinite(parsed):
            options.append(parsed)
    except (ValueError, RecursionError):  # not JSON (or nested past the parser's limit): the string itself
        pass
    if tenant_id is None:
        return or_(*(column.contains({key: o}) for o in options))
    # '{}' inline, not a parameter: a generic plan matches the index expression only with a constant.
    scoped = func.jsonb_set(literal_column("'{}'::jsonb", JSONB), array([cast(Run.tenant_id, Text)]), Run.metadata_,
                            type_=JSONB)
    return or_(*(scoped.contains({str(tenant_id): {key: o}}) for o in options))


# What a list shows of each run (app.api.schemas.RunSummary): not the outputs, which can be
# megabytes per run.
_SUMMARY = (Run.id, Run.target_kind, Run.target_id, Run.provider, Run.status, Run.prompt,
            Run.metadata_.label("metadata_"), Run.created_at, Run.finished_at)


def list_runs(s: Session | Connection, tenant_id: uuid.UUID, q: dict,
              metadata: dict[str, str]) -> tuple[list[Run], str | None]:
    """Newest first, keyset-paginated. On a Connection the query runs as Core (the API's hot path:
    an ORM Session's execution machinery was a fifth of a list request's CPU); either way the rows
    come back as transient Runs."""
    cond = [Run.tenant_id == tenant_id]
    targets = {q[k] for k in ("target_id", "sandbox_id", "computer_id") if k in q}
    if len(targets) > 1:
        raise Invalid.field("target_id", "target_id, sandbox_id and computer_id disagree")
    if targets:
        cond.append(Run.target_id == targets.pop())
    kind = q.get("target_kind") or ("sandbox" if "sandbox_id" in q else "computer" if "computer_id" in q else None)
    if kind:
        cond.append(Run.target_kind == kind)
    for name in ("status", "provider"):
        if name in q:
            cond.append(getattr(Run, name) == q[name])
    if "created_after" in q:
        cond.append(Run.created_at > q["created_after"])
    if "created_before" in q:
        cond.append(Run.created_at < q["created_before"])
    if "cursor" in q:
        cond.append(tuple_(Run.created_at, Run.id) < tuple_(*decode_cursor(q["cursor"])))
    limit = q["limit"]
    stmt = select(*_SUMMARY).where(and_(*cond)).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)
    if metadata:
        # No plan the planner picks from estimates serves every metadata filter: walking the tenant's
        # newest rows is right for a common value and scans the whole tenant for a rare one; the GIN
        # index is right for a rare value and fetches every match of a common one (and estimates for
        # jsonb containment, generic plans above all, are guesses: 336 ms at 200,000 runs). So, in one
        # statement: the matches among the newest `window` rows (the other filters applied) are the
        # answer when there are limit + 1 of them (a prefix of all matches); otherwise, and only then,
        # the tenant's matches come from ix_runs_tenant_metadata, sorted. Either way the result is
        # the one the plain query gives. bench/list_scale.py measures it (docs/list-scale.md).
        window = 1000
        recent = stmt.limit(window).subquery("recent")
        hits = (select(recent).where(*(_metadata_filter(k, v, recent.c.metadata_) for k, v in metadata.items()))
                .order_by(recent.c.created_at.desc(), recent.c.id.desc()).limit(limit + 1)
                .cte("hits").prefix_with("MATERIALIZED"))
        # Without tenant_id = ... in it: the scoped containment implies the tenant, and the planner
        # must not AND it with the tenant's whole range of ix_runs_tenant_created.
        found = (select(Run.tenant_id, *_SUMMARY)
                 .where(*cond[1:], *(_metadata_filter(k, v, tenant_id=tenant_id) for k, v in metadata.items()))
                 .cte("found").prefix_with("MATERIALIZED"))
        n_hits = select(func.count()).select_from(hits).scalar_subquery()
        fallback = (select(*(c for c in found.c if c.key != "tenant_id"))
                    .where(found.c.tenant_id == tenant_id, n_hits <= limit)
                    .order_by(found.c.created_at.desc(), found.c.id.desc()).limit(limit + 1))
        both = union_all(select(hits).where(n_hits > limit), fallback).subquery("page")
        stmt = select(both).order_by(both.c.created_at.desc(), both.c.id.desc())
    rows = [_transient_run(row._mapping) for row in s.execute(stmt)]
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def cancel(conn: Connection, tenant_id: uuid.UUID, run_id: str) -> Run:
    """Cancel a run of this tenant (see core.runstate.cancel); Conflict once it finished."""
    run = get(conn, tenant_id, run_id)
    try:
        return runstate.cancel(conn, run.id)
    except runstate.CancelConflict as exc:
        raise Conflict(f"run already {exc.args[0]}; nothing to cancel", code="run_finished") from None


# Built once: every live viewer runs it on every nudge.
_EVENTS = (select(RunEvent.seq, RunEvent.type, RunEvent.data, RunEvent.at)
           .where(RunEvent.run_id == bindparam("run_id"), RunEvent.seq > bindparam("after_seq"))
           .order_by(RunEvent.seq).limit(bindparam("limit")))


def events(s: Session | Connection, run_id: uuid.UUID, after_seq: int, limit: int) -> list:
    """Rows (seq, type, data, at) of the run's events after after_seq, oldest first."""
    return list(s.execute(_EVENTS, {"run_id": run_id, "after_seq": after_seq, "limit": limit}).all())
