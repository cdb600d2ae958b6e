"""Server-Sent Events for a run's event log: replay from a sequence number, then follow live.

Served by gunicorn's gevent workers, so a viewer costs a greenlet, not a worker. The stream ends
after the terminal status event; `Last-Event-ID` resumes after that seq.

Following is shared: one feed per followed run per API process subscribes to the run's Redis
channel, reads the new events from PostgreSQL when nudged (once a second without a nudge) and hands
the formatted frames to every viewer of the run. Each viewer first replays its own backlog, then
keeps the frames after its own cursor. (Before, every viewer re-read the database on every nudge:
500 viewers of a run cost 500 queries per tick of output.)
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import NamedTuple

import redis
from flask import Response

from app.api.schemas import MAX_SEQ, EventOut
from core import db
from core.models import TERMINAL
from core.notify import channel
from core.services import runs as run_service

log = logging.getLogger("agentruns.stream")
KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 1.0  # a feed reads at least this often: a lost nudge, or Redis is down
BATCH = 500
_EVENT_OUT = EventOut()  # one instance: building a schema costs more than dumping an event


class Frame(NamedTuple):
    seq: int
    text: str
    terminal: bool


def _frames(run_id: uuid.UUID, after_seq: int) -> list[Frame]:
    """The run's next events after after_seq (at most BATCH), as SSE frames."""
    with db.engine().connect() as conn:
        rows = run_service.events(conn, run_id, after_seq, BATCH)
    return [Frame(e.seq, f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps(_EVENT_OUT.dump(e))}\n\n",
                  e.type == "status" and json.loads(e.data).get("status") in TERMINAL) for e in rows]


class _Viewer:
    def __init__(self, cursor: int):
        self.cursor = cursor  # the seq of the last frame this viewer sent
        self.inbox: queue.Queue[list[Frame]] = queue.Queue()


class _Feed:
    """The one reader of a run's new events in this process."""

    def __init__(self, r: redis.Redis, run_id: uuid.UUID, read_upto: int):
        self.r, self.run_id, self.read_upto = r, run_id, read_upto
        self.viewers: set[_Viewer] = set()

    def run(self) -> None:
        pubsub = None
        try:
            try:
                pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel(self.run_id))
            except redis.RedisError:
                pubsub = None  # no nudges: read once a second
            while True:
                with _lock:
                    if not self.viewers:
                        del _feeds[self.run_id]
                        return
                    viewers = list(self.viewers)
                try:
                    frames = _frames(self.run_id, self.read_upto)
                    if frames:
                        self.read_upto = frames[-1].seq
                        for viewer in viewers:
                            viewer.inbox.put(frames)
                        if len(frames) == BATCH:
                            continue
                    pubsub = self._wait(pubsub)
                except Exception:  # never die while viewers wait on us: the next read catches up
                    log.exception("following the events of run %s", self.run_id)
                    threading.Event().wait(POLL_SECONDS)
        finally:
            if pubsub is not None:
                pubsub.close()

    def _wait(self, pubsub):
        if pubsub is not None:
            try:
                pubsub.get_message(timeout=POLL_SECONDS)
                return pubsub
            except redis.RedisError:
                pubsub.close()  # Redis went away: keep following by polling
        threading.Event().wait(POLL_SECONDS)
        return None


_feeds: dict[uuid.UUID, _Feed] = {}
_lock = threading.Lock()


def _join(r: redis.Redis, run_id: uuid.UUID, after_seq: int) -> _Viewer:
    """Register a viewer before it reads its backlog, so no event falls between the two."""
    viewer = _Viewer(after_seq)
    with _lock:
        existing = _feeds.get(run_id)
        start = existing is None
        feed = _feeds[run_id] = existing or _Feed(r, run_id, after_seq)
        feed.viewers.add(viewer)
    if start:
        threading.Thread(target=feed.run, daemon=True, name=f"agentruns-feed-{run_id}").start()
    return viewer


def _leave(run_id: uuid.UUID, viewer: _Viewer) -> None:
    with _lock:
        feed = _feeds.get(run_id)
        if feed is not None:
            feed.viewers.discard(viewer)


def follow(r: redis.Redis, run_id: uuid.UUID, after_seq: int) -> Iterator[str]:
    """Yield SSE frames from after_seq on until the run's terminal status event."""
    viewer = _join(r, run_id, after_seq)
    try:
        yield "retry: 1000\n\n"
        while True:  # the backlog, read by this viewer alone
            frames = _frames(run_id, viewer.cursor)
            for frame in frames:
                viewer.cursor = frame.seq
                yield frame.text
                if frame.terminal:
                    return
            if len(frames) < BATCH:
                break
        while True:  # then what the feed reads for every viewer
            try:
                frames = viewer.inbox.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                yield ": keepalive\n\n"
                continue
            for frame in frames:
                if frame.seq <= viewer.cursor:
                    continue  # already sent from the backlog
                viewer.cursor = frame.seq
                yield frame.text
                if frame.terminal:
                    return
    finally:
        _leave(run_id, viewer)


def resume_after(last_event_id: str, after_seq: int) -> int:
    """The seq a Last-Event-ID header resumes after; `after_seq` when the header holds no seq of ours."""
    # Ours are bigints in ASCII digits ("²".isdigit() is true as well); a longer number would make
    # int() refuse it (over 4300 digits) or the query fail (beyond a bigint).
    if last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 19:
        seq = int(last_event_id)
        if seq <= MAX_SEQ:
            return seq
    return after_seq


def response(r: redis.Redis, run_id: uuid.UUID, after_seq: int) -> Response:
    return Response(follow(r, run_id, after_seq), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
