"""kombu's Redis transport with one Redis client per channel, for every process that talks to the broker.

kombu's Redis channel builds a new redis.Redis for each publish, each unacked-index write and each
ack (Channel.conn_or_acquire), and building one fills its table of a few hundred response callbacks:
a quarter of the API's CPU for a POST went to `send_task`, mostly to that, and a twentieth of the
worker's per run. A redis.Redis is thread-safe (it takes connections from the channel's pool), and
this one lives exactly as long as its channel: a broker reconnect makes a new channel, and a new client.
The workers extend it (workers.broker); make_celery names it as every app's `broker_transport`.
"""
from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client is None:
            if self._shared_client is None:
                self._shared_client = self._create_client()
            client = self._shared_client
        yield client


class Transport(kombu_redis.Transport):
    Channel = Channel

