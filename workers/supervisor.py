"""One heartbeat thread per worker process for all of its in-flight runs.

Every tick (and START_DELAY after a run started) it records the starts (process group and time,
one statement for all runs) and flushes buffered output events (one INSERT, with each run's output
offsets, fenced by epoch); every heartbeat it renews the DB leases (one UPDATE), the Redis run locks
and the device slots, and picks up cancel requests. A run whose lease was lost is stopped with
reason `lease_lost` and writes nothing, because the epoch it holds is no longer the run's: a run
whose command runs detached (ssh) is only let go (another worker re-attaches to it), any other run
is killed.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from core import db, runstate
from core.notify import CANCEL_CHANNEL, publish

log = logging.getLogger("agentruns.worker")
TICK = 0.2
# How long a start waits to be recorded: a run that ends sooner records its start in its finish (one
# transaction less per short run), and the starts of a busy worker share one round trip.
START_DELAY = 0.02


@dataclass
class ActiveRun:
    run_id: uuid.UUID
    epoch: int
    lock_key: str
    lock_token: str
    slot_key: str  # "" when the run holds no device slot (a re-attach that found them all taken)
    slot_token: str
    stop: threading.Event = field(default_factory=threading.Event)  # kill the command
    detach: threading.Event = field(default_factory=threading.Event)  # let go of it, leave it running
    detachable: bool = False  # its command outlives us (ssh): lease_lost and worker_shutdown let go
    stop_reason: str | None = None  # "canceled" | "lease_lost" | "worker_shutdown"
    finishing: bool = False  # the process ended; its result is being recorded (the lease may be gone)
    events: list = field(default_factory=list)
    events_written: int = 0
    events_dropped: bool = False
    # Bytes of each stream taken into events so far (events dropped past the cap included): what
    # a worker taking the run over need not stream again. Written with the events (record_output).
    stdout_offset: int = 0
    stderr_offset: int = 0
    pgid: int | None = None  # set once the command started on the device
    started_at: datetime | None = None
    start_recorded: bool = False
    slot_lost: bool = False  # the device slot lapsed in Redis: do not claim more runs under it

    def request_stop(self, reason: str) -> None:
        if self.stop.is_set() or self.detach.is_set():
            return
        self.stop_reason = reason
        if self.detachable and reason in ("lease_lost", "worker_shutdown"):
            self.detach.set()
        else:
            self.stop.set()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
        return True
    except ValueError:
        return False


class Supervisor:
    def __init__(self, ctx):
        self.ctx = ctx
        self.active: dict[uuid.UUID, ActiveRun] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._last_beat = 0.0
        self._started = threading.Event()
        self.draining = False  # a warm shutdown began: finish in-flight runs, claim no more

    def add(self, run: ActiveRun) -> None:
        with self._lock:
            self.active[run.run_id] = run
            if self._thread is None or not self._thread.is_alive():
                # The thread starts with the first run after an idle spell; that run was just claimed
                # with a full lease, so the first renewal is due a heartbeat from now, not at once.
                self._last_beat = time.monotonic()
                self._thread = threading.Thread(target=self._loop, name="agentruns-heartbeat", daemon=True)
                self._thread.start()
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen_for_cancels, name="agentruns-cancels",
                                                  daemon=True)
                self._listener.start()

    def remove(self, run: ActiveRun) -> None:
        """Flush what is left of the run's output and forget it."""
        with self._lock:
            left = bool(run.events)
        if left:  # usually nothing: the result's transaction took the last output
            self.flush_events([run])
        with self._lock:
            self.active.pop(run.run_id, None)

    def started(self, run: ActiveRun, pgid: int) -> None:
        """The driver's on_start: the command runs on the device in process group pgid."""
        run.started_at, run.pgid = runstate.utcnow(), pgid
        self._started.set()

    def output(self, run: ActiveRun, stream: str, chunk: bytes) -> None:
        """Buffer a chunk of live output (called from driver threads)."""
        cap = self.ctx.settings.max_events_per_run
        with self._lock:
            if stream == "stdout":
                run.stdout_offset += len(chunk)
            else:
                run.stderr_offset += len(chunk)
            if run.events_written + len(run.events) < cap:
                run.events.append((stream, chunk.decode("utf-8", "replace")))
            elif not run.events_dropped:
                run.events_dropped = True
                run.events.append(("note", json.dumps({"note": f"live output capped at {cap} events"})))

    def stop_all(self, reason: str) -> None:
        with self._lock:
            for run in self.active.values():
                run.request_stop(reason)

    def flush_events(self, runs: list[ActiveRun] | None = None) -> None:
        """Write buffered output in one INSERT, with the runs' output offsets, for the runs whose
        epoch we still hold. Flushes are serialised with final_events(), so no batch the heartbeat
        took can commit after a run's terminal status."""
        with self._flush_lock:
            with self._lock:
                batch, offsets = [], []
                for run in runs if runs is not None else list(self.active.values()):
                    if run.events:
                        offsets.append((run.run_id, run.epoch, run.stdout_offset, run.stderr_offset))
                        batch.extend(self._take(run))
            if not batch:
                return
            try:
                with db.transaction() as conn:
                    written = runstate.record_output(conn, offsets, batch)
            except Exception:
                log.exception("could not write %d output events", len(batch))
                return
        for run_id in written:
            publish(self.ctx.redis, run_id, "output")

    @contextmanager
    def final_events(self, run: ActiveRun | None) -> Iterator[list[dict]]:
        """The run's unwritten output events, for the caller to insert in the transaction that records
        its end; until the caller is done, no heartbeat flush can commit another batch in between.
        If the caller fails, the events are put back for a later flush."""
        with self._lock:
            had_output = run is not None and bool(run.events_written or run.events)
        if run is None or not had_output:  # nothing of this run can be in flight: skip the process-wide lock
            yield []
            return
        with self._flush_lock:
            with self._lock:
                rows = self._take(run)
            try:
                yield rows
            except BaseException:
                with self._lock:
                    run.events[:0] = [(row["type"], row["data"]) for row in rows]
                    run.events_written -= len(rows)
                raise

    @staticmethod
    def _take(run: ActiveRun) -> list[dict]:
        # Holding self._lock.
        rows = [{"run_id": run.run_id, "type": stream, "data": data} for stream, data in run.events]
        run.events_written += len(run.events)
        run.events = []
        return rows

    def flush_starts(self) -> None:
        """Record the process groups and start times of runs that started since the last flush, in
        one round trip (runs already finishing record theirs in their finish)."""
        with self._lock:
            runs = [r for r in self.active.values() if r.pgid is not None and not r.start_recorded
                    and not r.finishing]
        if not runs:
            return
        try:
            with db.transaction() as conn:
                runstate.mark_started(conn, [(r.run_id, r.epoch, r.pgid, r.started_at) for r in runs])
        except Exception:
            log.exception("could not record the start of %d run(s); will retry", len(runs))
            return
        for r in runs:
            r.start_recorded = True

    def beat(self) -> None:
        """Renew every lease we hold and deliver cancel requests."""
        with self._lock:
            runs = [r for r in self.active.values() if not r.finishing]
        if not runs:
            return
        ttl = self.ctx.settings.lease_seconds
        try:
            with db.transaction() as conn:
                held = runstate.renew_leases(conn, [(r.run_id, r.epoch) for r in runs], ttl)
        except Exception:
            log.exception("lease renewal failed; will retry")
            return
        try:
            pipe = self.ctx.redis.pipeline(transaction=False)
            for r in runs:
                self.ctx.leases.extend(r.lock_key, r.lock_token, ttl * 1000, client=pipe)
                if r.slot_key:
                    self.ctx.leases.renew_slot(r.slot_key, r.slot_token, ttl * 1000, client=pipe)
                else:
                    pipe.echo(1)  # no slot to renew: keeps the replies in pairs
            renewed = pipe.execute()
            for r, slot_held in zip(runs, renewed[1::2], strict=True):
                # Redis lost the slot (a restart, or renewals failed for a whole lease): the run goes
                # on, fenced by PostgreSQL, but its delivery must not start more runs on the device.
                r.slot_lost = r.slot_lost or not slot_held
        except Exception as exc:  # Redis leases lapse harmlessly; PostgreSQL still fences the run
            log.warning("redis lease renewal failed: %s", exc)
        for r in runs:
            if r.finishing:
                continue  # finished while we renewed: its row is no longer `running`, which is fine
            if r.run_id not in held:
                if not r.stop.is_set() and not r.detach.is_set():
                    log.warning("run %s lost its lease (epoch %s); %s without writing", r.run_id, r.epoch,
                                "letting it go" if r.detachable else "stopping")
                r.request_stop("lease_lost")
            elif held[r.run_id]:
                r.request_stop("canceled")

    def _listen_for_cancels(self) -> None:
        """Stop a run the moment the API publishes its cancel; the heartbeat remains the fallback."""
        while True:
            try:
                pubsub = self.ctx.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                for message in pubsub.listen():
                    run_id = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
                    with self._lock:
                        run = self.active.get(uuid.UUID(run_id)) if _is_uuid(run_id) else None
                    if run is not None:
                        run.request_stop("canceled")
            except Exception as exc:  # Redis went away: the heartbeat still delivers cancels
                log.warning("cancel listener: %s; retrying in 1 s", exc)
                time.sleep(1.0)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self.active:
                    self._thread = None
                    return
            try:
                # The beat first: a flush can wait for a finishing run's transaction (final_events).
                if time.monotonic() - self._last_beat >= self.ctx.settings.heartbeat_seconds:
                    self._last_beat = time.monotonic()
                    self.beat()
                self.flush_starts()
                self.flush_events()
            except Exception:
                log.exception("heartbeat tick failed")
            if self._started.wait(TICK):
                self._started.clear()
                time.sleep(START_DELAY)
