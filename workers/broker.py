"""The workers' Redis transport: kombu's (with a client per channel, core.broker_transport), made to
survive a broker restart.

With acks_late, a worker holds unacknowledged messages. When Redis goes away, Celery's consumer
closes its connection (consumer.on_connection_error_after_connected) and kombu's virtual
Channel.close restores those messages through a Redis client built from the connection, which is
already gone: `AttributeError: 'NoneType' object has no attribute 'hostname'` (kombu 5.7; kombu
issues #970 and #582). Celery takes that for an unrecoverable error and the worker exits, with code 0
after its in-flight tasks, so a supervisor that restarts only on failure leaves the fleet dead. The
ack of such a message, once its task ends, fails the same way on the reconnected worker.

Skipping the restore loses nothing here: PostgreSQL, not the broker, is the record. A queued run
whose message is lost is re-sent by the sweeper, and a running run is held by its lease and fenced
by its epoch. Used by the worker's Celery app (workers.tasks); the API only sends.
"""
from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from core import broker_transport

log = logging.getLogger("agentruns.worker")


class QoS(kombu_redis.QoS):
    """Unacknowledged messages of a channel whose connection is gone are forgotten, not touched."""

    def _connection_gone(self) -> bool:
        connection = self.channel.connection
        return connection is None or connection.client is None

    def restore_unacked(self, client=None):
        """Put unacknowledged messages back, unless the broker connection is already gone."""
        if client is None and self._connection_gone():
            log.warning("broker connection gone: %d unacknowledged message(s) not restored; the sweeper "
                        "re-sends queued runs and leases hold running ones", len(self._delivered))
            self._delivered.clear()
            return None
        return super().restore_unacked(client)

    def ack(self, delivery_tag):
        """Acknowledge; a message of a connection that is gone went with it (or is re-sent by the sweeper)."""
        if self._connection_gone():
            log.info("message %s not acknowledged: its broker connection is gone", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # forget it here
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        """Reject (or requeue); like ack, a no-op for a message whose connection is gone."""
        if self._connection_gone():
            log.info("message %s not rejected: its broker connection is gone", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(broker_transport.Channel):
    QoS = QoS


class Transport(broker_transport.Transport):
    Channel = Channel


# What Celery's `broker_transport` setting names (kombu resolves "module:attribute").
TRANSPORT = f"{__name__}:Transport"
