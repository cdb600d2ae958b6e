"""Server-Sent Events for a run's event log: replay from a sequence number, then follow live.

Served by gunicorn's gevent workers, so a viewer costs a greenlet and a Redis subscription, not a
worker. The stream ends after the terminal status event; `Last-Event-ID` resumes after that seq.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

import redis
from flask import Response

from app import db
from app.api.schemas import EventOut
from app.models import TERMINAL
from app.notify import channel
from app.services import runs as run_service

KEEPALIVE_SECONDS = 15.0


_EVENT_OUT = EventOut()  # one instance: building a schema costs more than dumping an event


def format_event(event) -> str:
    body = json.dumps(_EVENT_OUT.dump(event))
    return f"id: {event.seq}\nevent: {event.type}\ndata: {body}\n\n"


def is_terminal(event) -> bool:
    return event.type == "status" and json.loads(event.data).get("status") in TERMINAL


def follow(r: redis.Redis, run_id: uuid.UUID, after_seq: int) -> Iterator[str]:
    """Yield SSE frames from after_seq on until the run's terminal status event."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel(run_id))  # subscribe before reading, so no event slips between the two
    except redis.RedisError:
        pubsub = None  # no nudges: poll the database once a second instead
    try:
        yield "retry: 1000\n\n"
        while True:
            with db.engine().connect() as conn:
                rows = run_service.events(conn, run_id, after_seq, 500)
            for event in rows:
                after_seq = event.seq
                yield format_event(event)
                if is_terminal(event):
                    return
            if len(rows) == 500:
                continue
            if pubsub is not None:
                try:
                    if pubsub.get_message(timeout=KEEPALIVE_SECONDS) is None:
                        yield ": keepalive\n\n"
                    continue
                except redis.RedisError:
                    pubsub.close()
                    pubsub = None  # Redis went away mid-stream: keep following by polling
            time.sleep(1.0)
            yield ": keepalive\n\n"
    finally:
        if pubsub is not None:
            pubsub.close()


def response(r: redis.Redis, run_id: uuid.UUID, after_seq: int) -> Response:
    return Response(follow(r, run_id, after_seq), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
