"""/api/v1/devices: the tenant's sandboxes and computers."""
from __future__ import annotations

from flask import current_app, g

from app.api.device_schemas import DeviceCreate, DeviceEnvelope, DeviceListEnvelope, DevicePatch, DeviceTestEnvelope
from app.api.parser import Blueprint
from core import db, device_networks
from core.messages import Queued, enqueue
from core.services import device_config
from core.services import devices as device_service
from drivers import get_driver
from drivers.base import DriverError

blp = Blueprint("devices", __name__, url_prefix="/api/v1", description="Devices")
_NOT_FOUND = {404: "not_found: no such device in this tenant."}


def _key() -> str:
    return current_app.extensions["settings"].secret_key


def _allow_local() -> bool:
    return current_app.extensions["settings"].allow_local_devices


def _networks() -> device_networks.DeviceNetworks:
    return device_networks.policy(current_app.extensions["settings"])


@blp.route("/devices", methods=["POST"])
@blp.arguments(DeviceCreate)
@blp.response(201, DeviceEnvelope, headers={"Location": {
    "description": "The device's path, /api/v1/devices/{id}.", "required": True,
    "schema": {"type": "string", "format": "uri-reference"}}})
@blp.errors({409: "device_exists: a device with this id already exists.",
             422: "validation_error: the body failed validation (error.details.fields names the fields), "
                  "e.g. driver local where the server does not allow local devices. "
                  "device_address_refused: the host resolves to an address devices may not use "
                  "(loopback, link-local, multicast, the service's own hosts, or outside the operator's "
                  "AGENTRUNS_DEVICE_NETWORKS)."})
def create_device(data):
    """Register a device; secrets are write-only."""
    with db.session() as s:
        device = device_service.create(s, g.tenant_id, data, _key(), allow_local=_allow_local(),
                                       networks=_networks(),
                                       max_devices=current_app.extensions["settings"].quota_devices)
        out = device_service.to_out(device, _key())
    return {"data": out}, 201, {"Location": f"/api/v1/devices/{out['id']}"}


@blp.route("/devices", methods=["GET"])
@blp.response(200, DeviceListEnvelope)
def list_devices():
    """All devices of the caller's tenant."""
    with db.session() as s:
        return {"data": [device_service.to_out(d, _key()) for d in device_service.list_all(s, g.tenant_id)]}


@blp.route("/devices/<device_id>", methods=["GET"])
@blp.response(200, DeviceEnvelope)
@blp.errors(_NOT_FOUND)
def get_device(device_id):
    """One device."""
    with db.session() as s:
        return {"data": device_service.to_out(device_service.get(s, g.tenant_id, device_id), _key())}


@blp.route("/devices/<device_id>", methods=["PATCH"])
@blp.arguments(DevicePatch)
@blp.response(200, DeviceEnvelope)
@blp.errors({**_NOT_FOUND, 422: "validation_error, or device_address_refused: the new host resolves to an "
                                "address devices may not use (AGENTRUNS_DEVICE_NETWORKS)."})
def patch_device(data, device_id):
    """Change some fields; a secret set to null is removed. A new `pool` takes the device's queued
    runs with it."""
    with db.session() as s:
        # Only a new pool reads the device first: its queued runs follow it to the new pool's queue.
        before = device_service.get(s, g.tenant_id, device_id).pool if "pool" in data else None
        device = device_service.update(s, g.tenant_id, device_id, data, _key(), allow_local=_allow_local(),
                                       networks=_networks())
        out = device_service.to_out(device, _key())
        moved = before is not None and device.pool != before
        queued = device_service.queued_runs(s.connection(), g.tenant_id, device.id) if moved else []
    if queued:  # after the commit: the new pool's workers claim them (the old pool's pass theirs on)
        enqueue(current_app.extensions["celery"], [Queued(run_id, g.tenant_id, out["id"], out["pool"])
                                                   for run_id in queued])
    return {"data": out}


@blp.route("/devices/<device_id>", methods=["DELETE"])
@blp.response(204)
@blp.errors({**_NOT_FOUND, 409: "device_busy: runs are queued or running on the device."})
def delete_device(device_id):
    """Delete a device with no runs in flight."""
    with db.session() as s:
        device_service.delete(s, g.tenant_id, device_id)


@blp.route("/devices/<device_id>/test", methods=["POST"])
@blp.response(200, DeviceTestEnvelope)
@blp.errors(_NOT_FOUND)
def test_device(device_id):
    """Open (or reuse) a connection and run `true`: reports reachability, latency and the host key."""
    with db.session() as s:
        device = device_service.get(s, g.tenant_id, device_id)
    if device.driver == "local" and not _allow_local():  # it would run `true` on the API's host
        return {"data": {"ok": False, "latency_ms": None, "host_key": None,
                         "error": {"code": "local_driver_disabled", "message": device_config.LOCAL_DISABLED}}}
    cfg = device_config.load(device, _key(), networks=_networks())
    pinned = []

    def pin(line: str) -> None:
        device_config.pin_host_key(device.tenant_id, device.id)(line)
        pinned.append(line)

    try:
        latency = get_driver(cfg.spec, on_host_key=pin).ping()
    except DriverError as exc:
        return {"data": {"ok": False, "latency_ms": None, "host_key": device.host_key,
                         "error": {"code": exc.code, "message": exc.message}}}
    return {"data": {"ok": True, "latency_ms": round(latency * 1000, 2),
                     "host_key": pinned[0] if pinned else device.host_key, "error": None}}
