"""Per-process cache of device settings (secrets decrypted once), checked at every claim.

Every claim returns the device's `updated_at` (core.runstate.claim_next); a run whose device changed
since it was cached reloads it first, so a run always executes with the settings current when it
was claimed, while a busy device costs no extra read or decryption per run. The slot limit is read
before any claim, so an entry older than MAX_AGE is checked against the device's `updated_at` first:
a changed `max_concurrent_runs` applies to new runs within that time.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select

from core import db
from core.device_networks import DeviceNetworks
from core.runstate import devices
from core.services import device_config
from core.services.device_config import DeviceConfig

MAX_AGE = 2.0  # seconds


@dataclass(frozen=True)
class CachedDevice:
    tenant_id: uuid.UUID
    id: str
    version: datetime
    max_concurrent_runs: int
    config: DeviceConfig
    pool: str  # the worker pool that serves it
    checked_at: float  # time.monotonic() of the last check against the database


class DeviceCache:
    def __init__(self, secret_key: str, networks: DeviceNetworks | None):
        self._secret_key = secret_key
        self._networks = networks  # the allow-list the driver checks each address against
        self._entries: dict[tuple[uuid.UUID, str], CachedDevice] = {}
        self._lock = threading.Lock()

    def get(self, tenant_id: uuid.UUID, device_id: str) -> CachedDevice | None:
        """The device, read from PostgreSQL the first time and checked again once MAX_AGE old;
        None if it does not exist."""
        with self._lock:
            entry = self._entries.get((tenant_id, device_id))
        if entry is None:
            return self.reload(tenant_id, device_id)
        if time.monotonic() - entry.checked_at < MAX_AGE:
            return entry
        with db.transaction() as conn:
            version = conn.execute(select(devices.c.updated_at).where(
                devices.c.tenant_id == tenant_id, devices.c.id == device_id)).scalar_one_or_none()
        if version != entry.version:
            return self.reload(tenant_id, device_id)
        entry = replace(entry, checked_at=time.monotonic())
        with self._lock:
            self._entries[(tenant_id, device_id)] = entry
        return entry

    def current(self, entry: CachedDevice, version: datetime | None) -> CachedDevice | None:
        """entry if `version` (from a claim) is still its version, else the device read anew."""
        return entry if version == entry.version else self.reload(entry.tenant_id, entry.id)

    def reload(self, tenant_id: uuid.UUID, device_id: str) -> CachedDevice | None:
        with db.transaction() as conn:
            row = conn.execute(select(devices).where(devices.c.tenant_id == tenant_id,
                                                     devices.c.id == device_id)).first()
        key = (tenant_id, device_id)
        if row is None:
            with self._lock:
                self._entries.pop(key, None)
            return None
        entry = CachedDevice(tenant_id, device_id, row.updated_at, row.max_concurrent_runs,
                             device_config.load(row, self._secret_key, networks=self._networks), row.pool,
                             time.monotonic())
        with self._lock:
            self._entries[key] = entry
        return entry
