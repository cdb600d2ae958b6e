"""The webhook dispatcher: send the deliveries that are due, record each attempt, retry with backoff.

Deliveries come from the outbox (migration 0006). A dispatcher claims a delivery by holding it for a
while (locked_until, with a token that fences the write of its result), sends it without a
transaction open, then records the attempt. At least once: a dispatcher dying mid-send leaves the
hold to expire and another sends the event again, under the same event id. In order per endpoint
and run: only the oldest pending delivery of an (endpoint, run) can be claimed, so a run's
`run.succeeded` never overtakes its `run.started`, even while that one is being retried.

One loop per worker process (`webhooks.dispatch` tasks arriving meanwhile only wake it), with
AGENTRUNS_WEBHOOK_CONCURRENCY requests in flight on its own threads: a slow receiver holds one of
those, never a run.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

from sqlalchemy import text

from agentruns.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from core import db
from core.config import Settings
from core.run_shape import RunOut, run_from_snapshot, utc_text
from core.services.webhooks import drop_pending, event_id, signing_secrets
from workers import metrics
from workers.webhook_http import Outcome, Sender

log = logging.getLogger("agentruns.webhooks")

MAX_DELAY_SECONDS = 6 * 3600
LOOP_SECONDS = 20.0  # one task's loop; beat and the kicker start the next

_CLAIM = text("""
WITH due AS (
    SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
    WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND (d.locked_until IS NULL OR d.locked_until < now())
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                      WHERE p.endpoint_id = d.endpoint_id AND p.run_id = d.run_id AND p.state = 'pending'
                        AND p.event_seq < d.event_seq)
    ORDER BY d.next_attempt_at LIMIT :limit FOR UPDATE OF d SKIP LOCKED)
UPDATE webhook_deliveries d SET locked_until = now() + make_interval(secs => :hold_seconds), lock_token = :token
FROM due, webhook_events e, webhook_endpoints w
WHERE d.id = due.id AND e.id = d.event_id AND w.id = d.endpoint_id
RETURNING d.id, d.attempts, d.created_at, coalesce(d.url, w.url) AS url, e.id AS event_id, e.type, e.run,
          e.created_at AS event_created_at, w.id AS endpoint_id, w.per_run, w.secret_enc, w.previous_secret_enc,
          w.previous_secret_expires_at""")
# When the next delivery that is the oldest pending one of its (endpoint, run) comes due.
_NEXT_DUE = text("""
SELECT extract(epoch FROM min(greatest(d.next_attempt_at, coalesce(d.locked_until, d.next_attempt_at))) - now())
FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
WHERE d.state = 'pending'
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                  WHERE p.endpoint_id = d.endpoint_id AND p.run_id = d.run_id AND p.state = 'pending'
                    AND p.event_seq < d.event_seq)""")
_RECORD = text("""
WITH done AS (
    UPDATE webhook_deliveries SET attempts = attempts + 1, locked_until = NULL, lock_token = NULL,
           state = CAST(:state AS varchar), next_attempt_at = now() + make_interval(secs => :retry_in),
           last_status_code = CAST(:status_code AS integer), last_error = CAST(:error AS text),
           last_latency_ms = CAST(:latency_ms AS integer),
           delivered_at = CASE WHEN CAST(:state AS varchar) = 'delivered' THEN now() END
    WHERE id = :id AND lock_token = :token
    RETURNING id, endpoint_id),
logged AS (
    INSERT INTO webhook_attempts (delivery_id, status_code, error, latency_ms)
    SELECT id, CAST(:status_code AS integer), CAST(:error AS text), CAST(:latency_ms AS integer) FROM done),
healthy AS (  -- a success ends the endpoint's failing spell
    UPDATE webhook_endpoints SET failing_since = NULL
    WHERE id IN (SELECT endpoint_id FROM done) AND CAST(:state AS varchar) = 'delivered' AND failing_since IS NOT NULL)
SELECT count(*) FROM done""")
# An endpoint failing for longer than the limit is disabled, with the reason its owner sees.
_FAILING = text("""
UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now()),
       enabled = enabled AND NOT coalesce(failing_since < now() - make_interval(secs => :disable_after), false),
       disabled_reason = CASE WHEN enabled AND failing_since < now() - make_interval(secs => :disable_after)
           THEN 'failing since ' || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                || '; last error: ' || CAST(:error AS text)
           ELSE disabled_reason END
WHERE id = :id AND NOT per_run
RETURNING enabled""")
_PURGE = text("""
DELETE FROM webhook_events e WHERE e.created_at < now() - make_interval(days => :days)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = 'pending')""")


def decide(outcome: Outcome, attempts_before: int, settings: Settings) -> tuple[str, float]:
    """(state, seconds until the next attempt) after an attempt: 2xx delivered; a network error,
    timeout, 408, 429 or 5xx retried with exponential backoff and jitter (at least Retry-After) until
    the attempts run out; anything else (3xx: redirects are not followed, other 4xx) failed at once."""
    status = outcome.status_code
    if status is not None and 200 <= status < 300:
        return "delivered", 0.0
    retryable = not outcome.final and (status is None or status in (408, 429) or status >= 500)
    if not retryable or attempts_before + 1 >= settings.webhook_max_attempts:
        return "failed", 0.0
    delay = min(settings.webhook_retry_base_seconds * 3 ** attempts_before, MAX_DELAY_SECONDS)
    delay *= random.uniform(0.8, 1.2)  # receivers that failed together do not get their retries together
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_DELAY_SECONDS))
    return "pending", delay


_RUN_OUT = RunOut()  # built once: a marshmallow schema costs more to build than to dump a run


def render(event_uuid: uuid.UUID, event_type: str, created_at: datetime, run: dict) -> bytes:
    """The body every attempt of an event sends: the same bytes each time (built from stored data)."""
    body = {"id": event_id(event_uuid), "type": event_type,
            "created_at": utc_text(created_at),
            "data": _RUN_OUT.dump(run_from_snapshot(run))}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Dispatcher:
    """The process's dispatch loop and its threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sender = Sender(timeout=settings.webhook_timeout_seconds, allow_http=settings.webhook_allow_http,
                             allow_private=settings.webhook_allow_private,
                             max_connections=settings.webhook_concurrency * 2)
        if settings.webhook_concurrency < 1:
            raise ValueError("AGENTRUNS_WEBHOOK_CONCURRENCY must be at least 1")
        self.pool = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="agentruns-webhook")
        self.hold_seconds = settings.webhook_timeout_seconds * 3 + 10
        self._running = threading.Lock()
        self._wake = threading.Event()

    def run(self, seconds: float = LOOP_SECONDS) -> tuple[int, bool] | None:
        """Send what is due for up to `seconds` (and finish the requests in flight then).

        Returns (attempts made, whether deliveries were still due when the time was up), or None
        when this process's loop was already running (it has been woken instead).
        """
        if not self._running.acquire(blocking=False):
            self._wake.set()
            return None
        try:
            return self._loop(time.monotonic() + seconds)
        finally:
            self._running.release()

    def _loop(self, deadline: float) -> tuple[int, bool]:
        attempts = 0
        in_flight: set[Future] = set()
        while True:
            free = self.settings.webhook_concurrency - len(in_flight)
            # Claim in batches (half the slots or more): a claim is a query over the pending deliveries.
            if (free * 2 >= self.settings.webhook_concurrency or not in_flight) and time.monotonic() < deadline:
                self._wake.clear()  # before the claim: a wake-up after it is for work this claim missed
                token, claimed = self._claim(free)
                in_flight.update(self.pool.submit(self._deliver, row, token) for row in claimed)
            if in_flight:
                done, in_flight = wait(in_flight, timeout=0.25, return_when=FIRST_COMPLETED)
                attempts += len(done)
                continue
            due_in = self._next_due_in()
            left = deadline - time.monotonic()
            if due_in is None or left <= 0 or due_in >= left:
                return attempts, due_in is not None and due_in <= 0
            self._wake.wait(max(due_in, 0.05))

    def _claim(self, limit: int) -> tuple[uuid.UUID, list]:
        """Hold up to `limit` due deliveries; the token fences the writes of their results."""
        token = uuid.uuid4()
        with db.transaction() as conn:
            return token, list(conn.execute(_CLAIM, dict(limit=limit, hold_seconds=self.hold_seconds,
                                                         token=token)).all())

    def _next_due_in(self) -> float | None:
        with db.transaction() as conn:
            due = conn.execute(_NEXT_DUE).scalar()
        return None if due is None else float(due)

    def _deliver(self, claimed, token: uuid.UUID) -> None:
        try:
            self._send(claimed, token)
        except Exception:  # the database went away, say: the hold lapses and the event is sent again
            log.exception("webhook delivery %s: attempt not recorded", claimed.id)

    def _send(self, claimed, token: uuid.UUID) -> None:
        now = datetime.now(UTC)
        try:
            body = render(claimed.event_id, claimed.type, claimed.event_created_at, claimed.run)
            secrets = signing_secrets(claimed, self.settings.secret_key, now)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, not retried every hold forever
            log.exception("webhook delivery %s: could not be built", claimed.id)
            outcome = Outcome(None, f"not sent: could not build the request: {type(exc).__name__}", 0, final=True)
        else:
            headers = [("Content-Type", "application/json"), ("User-Agent", USER_AGENT),
                       (EVENT_ID_HEADER, event_id(claimed.event_id)),
                       (SIGNATURE_HEADER, sign(body, secrets, int(now.timestamp())))]
            outcome = self.sender.post(claimed.url, body, headers)
        state, retry_in = decide(outcome, claimed.attempts, self.settings)
        self._record(claimed, token, outcome, state, retry_in)

    def _record(self, claimed, token: uuid.UUID, outcome: Outcome, state: str, retry_in: float) -> None:
        with db.transaction() as conn:
            written = conn.execute(_RECORD, dict(
                id=claimed.id, token=token, state=state, retry_in=retry_in,
                status_code=outcome.status_code, error=outcome.error, latency_ms=outcome.latency_ms)).scalar()
            if not written:  # held too long (another dispatcher took it over), or its endpoint was deleted
                log.warning("webhook delivery %s: not recorded (its hold lapsed, or it was deleted)", claimed.id)
                return
            if state != "delivered":
                enabled = conn.execute(_FAILING, dict(id=claimed.endpoint_id, error=_describe(outcome),
                                                      disable_after=self.settings.webhook_disable_after_seconds))
                if enabled.scalar() is False:  # disabled now: its pending deliveries end with it
                    drop_pending(conn, claimed.endpoint_id)
        metrics.WEBHOOK_ATTEMPTS.labels("delivered" if state == "delivered" else
                                        "retry" if state == "pending" else "failed").inc()
        metrics.WEBHOOK_LATENCY.observe(outcome.latency_ms / 1000)
        if state == "delivered":
            metrics.WEBHOOK_DELIVERY_AGE.observe((datetime.now(UTC) - claimed.created_at).total_seconds())
        elif state == "failed":
            log.warning("webhook delivery %s of %s to endpoint %s given up after %d attempt(s): %s", claimed.id,
                        event_id(claimed.event_id), claimed.endpoint_id, claimed.attempts + 1, _describe(outcome))


def _describe(outcome: Outcome) -> str:
    return outcome.error or f"HTTP {outcome.status_code}"


def purge(days: int) -> int:
    """Delete events older than `days` that nothing is still trying to deliver (with their log)."""
    with db.transaction() as conn:
        return conn.execute(_PURGE, dict(days=days)).rowcount


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"agentruns-webhooks/{version('agentruns')}"
    except Exception:  # noqa: BLE001 - an uninstalled checkout still sends a name
        return "agentruns-webhooks"


USER_AGENT = _user_agent()
_dispatcher: Dispatcher | None = None
_lock = threading.Lock()


def dispatcher() -> Dispatcher:
    global _dispatcher
    with _lock:
        if _dispatcher is None:
            settings = Settings.from_env()
            db.init(settings.database_url)
            _dispatcher = Dispatcher(settings)
        return _dispatcher
