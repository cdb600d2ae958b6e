"""The device Test button: connect and run `true` (as POST /api/v1/devices/{id}/test does), and keep
the last result per device in Redis so that the device list can show it.

The devices table has no column for test results; Redis keeps them for RESULT_TTL_SECONDS, which is
enough for "what happened when I last tested it" (a lost result only means "not tested yet").
"""
from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

import redis
from flask import current_app

from app.console.present import iso
from core import db, device_networks
from core.services import device_config
from core.services import devices as device_service
from drivers import get_driver
from drivers.base import DriverError

log = logging.getLogger("agentruns.console")
RESULT_TTL_SECONDS = 30 * 86400


def _result_key(tenant_id: uuid.UUID, device_id: str) -> str:
    return f"agentruns:console:device-test:{tenant_id}:{device_id}"


def run_test(tenant_id: uuid.UUID, device_id: str) -> dict:
    """Test the device now: {ok, latency_ms, host_key, error, at}; the result is also kept."""
    settings = current_app.extensions["settings"]
    with db.session() as s:
        device = device_service.get(s, tenant_id, device_id)
    result: dict[str, object]
    if device.driver == "local" and not settings.allow_local_devices:  # it would run `true` on this host
        result = {"ok": False, "latency_ms": None, "host_key": None,
                  "error": {"code": "local_driver_disabled", "message": device_config.LOCAL_DISABLED}}
    else:
        cfg = device_config.load(device, settings.secret_key, networks=device_networks.policy(settings))
        pinned: list[str] = []

        def pin(line: str) -> None:
            device_config.pin_host_key(device.tenant_id, device.id)(line)
            pinned.append(line)

        try:
            latency = get_driver(cfg.spec, on_host_key=pin).ping()
            result = {"ok": True, "latency_ms": round(latency * 1000, 2),
                      "host_key": pinned[0] if pinned else device.host_key, "error": None}
        except DriverError as exc:
            result = {"ok": False, "latency_ms": None, "host_key": device.host_key,
                      "error": {"code": exc.code, "message": exc.message}}
    result["at"] = iso(datetime.now(UTC))
    result["pinned_now"] = bool(result.get("ok") and device.host_key is None and result.get("host_key"))
    try:
        current_app.extensions["redis"].set(_result_key(tenant_id, device_id), json.dumps(result),
                                            ex=RESULT_TTL_SECONDS)
    except redis.RedisError as exc:
        log.warning("could not keep a device test result: %s", exc)
    return result


def last_results(tenant_id: uuid.UUID, device_ids: list[str]) -> dict[str, dict]:
    """The last kept test result of each of these devices (those tested)."""
    if not device_ids:
        return {}
    try:
        raw = current_app.extensions["redis"].mget([_result_key(tenant_id, d) for d in device_ids])
    except redis.RedisError:
        return {}
    return {d: json.loads(value) for d, value in zip(device_ids, raw, strict=True) if value}


def forget(tenant_id: uuid.UUID, device_id: str) -> None:
    """Drop a deleted device's result (a new device of the same id starts untested)."""
    try:
        current_app.extensions["redis"].delete(_result_key(tenant_id, device_id))
    except redis.RedisError:
        pass
