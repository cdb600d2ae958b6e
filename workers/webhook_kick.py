"""Wake the webhook dispatcher as soon as the outbox has something: a LISTEN in the beat process.

The outbox trigger (migration 0006) NOTIFYs at the commit of a status change that queued deliveries;
this thread turns each burst of notifications into one `webhooks.dispatch` message. Nothing depends
on it for correctness: beat sends the same message every few seconds anyway, so a lost notification
(the connection dropped, beat restarted) only delays a delivery until then.
"""
from __future__ import annotations

import logging
import threading
import time

import psycopg
from sqlalchemy.engine import make_url

from core.config import Settings
from core.messages import WEBHOOK_CHANNEL, WEBHOOKS_DISPATCH

log = logging.getLogger("agentruns.webhooks")


def conninfo(database_url: str) -> str:
    """libpq's form of a SQLAlchemy URL (postgresql+psycopg://...)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


# At most one kick per this many seconds: a busy service commits status changes hundreds of times a
# second, and each kick is a Celery message to send and to handle; the last burst is always kicked.
MIN_INTERVAL = 0.05


def listen_forever(celery, settings: Settings, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo(settings.database_url), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {WEBHOOK_CHANNEL}")
                _kick(celery)  # whatever was committed while nobody listened
                _relay(conn, celery, stop)
        except psycopg.Error as exc:
            log.warning("webhook listener: %s; listening again in 2 s", type(exc).__name__)
            stop.wait(2.0)


def _relay(conn: psycopg.Connection, celery, stop: threading.Event) -> None:
    """Turn notifications into kicks, at most one per MIN_INTERVAL, none lost at the end of a burst."""
    last_kick, pending = time.monotonic(), False
    while not stop.is_set():
        wait = max(0.0, last_kick + MIN_INTERVAL - time.monotonic()) if pending else 1.0
        for _ in conn.notifies(timeout=wait, stop_after=1):
            pending = True
        if pending and time.monotonic() - last_kick >= MIN_INTERVAL:
            for _ in conn.notifies(timeout=0.0):  # the rest of the burst: one kick for all
                pass
            _kick(celery)
            last_kick, pending = time.monotonic(), False


def _kick(celery) -> None:
    try:
        celery.send_task(WEBHOOKS_DISPATCH, retry=False)
    except Exception as exc:  # kombu and redis-py raise several types for an unreachable broker
        log.warning("webhook kick not sent (beat's schedule will): %s", type(exc).__name__)
        time.sleep(0.5)


def start(celery, settings: Settings) -> threading.Event:
    """Start the listener thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=listen_forever, args=(celery, settings, stop), name="agentruns-webhook-listen",
                     daemon=True).start()
    return stop
