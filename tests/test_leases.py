"""Redis leases against a real Redis: run locks and device slots with the pending mark."""
from __future__ import annotations

import time
import uuid

from workers.leases import Leases, Slot, new_token, pending_key, slots_key


def _slot(device: str) -> Slot:
    tenant = uuid.uuid4()
    return Slot(slots_key(tenant, device), new_token(), pending_key(tenant, device))


def test_a_full_device_leaves_a_pending_mark_for_the_holder(redis_client):
    leases = Leases(redis_client)
    holder = _slot("d")
    late = holder._replace(token=new_token())
    assert leases.acquire_slot(holder, 1, 10_000)
    assert not leases.acquire_slot(late, 1, 10_000)  # full: the mark is set
    assert leases.release_slot(holder) is True  # the holder learns it must look again
    assert leases.acquire_slot(late, 1, 10_000)
    assert leases.release_slot(late) is False  # the mark was taken once


def test_slots_respect_the_limit_and_expire(redis_client):
    leases = Leases(redis_client)
    first = _slot("d")
    second, third = first._replace(token=new_token()), first._replace(token=new_token())
    assert leases.acquire_slot(first, 2, 10_000) and leases.acquire_slot(second, 2, 10_000)
    assert not leases.acquire_slot(third, 2, 10_000)
    redis_client.zadd(first.key, {first.token: 0})  # first's lease lapsed (a crashed worker)
    assert leases.acquire_slot(third, 2, 10_000)
    assert leases.renew_slot(first.key, first.token, 10_000) is False  # a lapsed holder stays out


def test_unlock_releases_only_our_own_lock_and_always_notifies(redis_client):
    leases = Leases(redis_client)
    key, channel = f"agentruns:run-lock:{uuid.uuid4()}", f"agentruns:run:{uuid.uuid4()}"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    assert leases.lock(key, "mine", 10_000) and not leases.lock(key, "theirs", 10_000)
    leases.unlock(key, "theirs", notify=channel)
    assert redis_client.get(key) == b"mine"
    leases.unlock(key, "mine", notify=channel)
    assert redis_client.get(key) is None
    got, deadline = [], time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)  # None for the (ignored) subscribe confirmation
        if message:
            got.append(message["data"])
    assert got == [b"finished", b"finished"]


def test_a_slot_lost_in_redis_is_taken_again_by_its_running_run(redis_client):
    """Redis restarted empty: the run is still on the device, so its renewal puts its slot back (and
    says it had been lost, so its delivery claims no more), and the device stays within its limit."""
    leases = Leases(redis_client)
    tenant, device = uuid.uuid4(), "d"
    slot = Slot(slots_key(tenant, device), new_token(), pending_key(tenant, device))
    assert leases.acquire_slot(slot, 1, 5000)
    assert leases.renew_slot(slot.key, slot.token, 5000)
    redis_client.delete(slot.key)  # what a restart without persistence does
    assert not leases.renew_slot(slot.key, slot.token, 5000)  # lost ...
    assert redis_client.zscore(slot.key, slot.token) is not None  # ... and taken again
    other = Slot(slot.key, new_token(), slot.pending_key)
    assert not leases.acquire_slot(other, 1, 5000)  # the device's one slot is the running run's
