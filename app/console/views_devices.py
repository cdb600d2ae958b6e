"""Devices: list with their last test, add, edit, delete, Test. Secrets are write-only here too."""
from __future__ import annotations

from flask import current_app, redirect, render_template, request, url_for

from agentruns.vocabulary import KINDS, PROVIDERS
from app.console import device_forms, device_test, present, session
from app.console.blueprint import blp, tenant_id
from core import db, device_networks
from core.crypto import decrypt_json
from core.errors import Conflict, DomainError
from core.services import devices as device_service


def _settings():
    return current_app.extensions["settings"]


@blp.get("/devices")
def devices():
    """The tenant's devices with their last test result."""
    with db.session() as s:
        rows = [device_service.to_out(d, _settings().secret_key) for d in device_service.list_all(s, tenant_id())]
    results = device_test.last_results(tenant_id(), [d["id"] for d in rows])
    return render_template("console/devices.html", devices=rows, results=results, present=present)


def _render_new(form, errors: dict[str, list[str]], status: int = 200):
    return render_template("console/device_new.html", form=form, errors=errors, kinds=KINDS,
                           allow_local=_settings().allow_local_devices), status


def _typed() -> dict[str, str]:
    """The add form as typed, but for its secrets (never sent back to the browser)."""
    return {k: v for k, v in request.form.items() if k not in ("password", "private_key", "csrf_token")}


@blp.get("/devices/new")
def device_new():
    """The add-device form."""
    return _render_new({"kind": "computer", "driver": "ssh", "port": "22", "max_concurrent_runs": "1",
                        "login_shell": "on"}, {})


@blp.post("/devices/new")
def device_create():
    """Add a device, then open it (where Test shows its host key for confirmation)."""
    try:
        body = device_forms.create_body(request.form, request.files)
        with db.session() as s:
            device = device_service.create(s, tenant_id(), body, _settings().secret_key,
                                           allow_local=_settings().allow_local_devices,
                                           networks=device_networks.policy(_settings()),
                                           max_devices=_settings().quota_devices)
            device_id = device.id
    except device_forms.FormProblems as exc:
        return _render_new(_typed(), exc.fields, 422)
    except DomainError as exc:
        return _render_new(_typed(), exc.details.get("fields") or {"_form": [exc.message]}, 422)
    session.current().flash("ok", f"Device {device_id} added. Test it to check the connection"
                                  " and see its host key.")
    return redirect(url_for("console.device_page", device_id=device_id))


def _render_device(device_id: str, errors: dict[str, list[str]] | None = None, status: int = 200):
    with db.session() as s:
        device = device_service.to_out(device_service.get(s, tenant_id(), device_id), _settings().secret_key)
    form = dict(device)
    if errors:  # show what was typed (but secrets), not what is stored
        form.update({k: v for k, v in request.form.items() if k not in ("password", "private_key")})
        form.update(trust_on_first_use=request.form.get("trust_on_first_use") == "on",
                    login_shell=request.form.get("login_shell") == "on")
    result = device_test.last_results(tenant_id(), [device_id]).get(device_id)
    return render_template("console/device.html", device=device, form=form, result=result, errors=errors or {},
                           providers=PROVIDERS, present=present), status


@blp.get("/devices/<device_id>")
def device_page(device_id: str):
    """One device: its settings to edit, Test, delete."""
    return _render_device(device_id)


@blp.post("/devices/<device_id>")
def device_update(device_id: str):
    """Save the edit form (blank secrets keep what is stored)."""
    try:
        with db.session() as s:
            device = device_service.get(s, tenant_id(), device_id)
            current_env = decrypt_json(_settings().secret_key, device.secrets_enc).get("provider_env", {})
            body = device_forms.patch_body(request.form, request.files, dict(device.providers or {}), current_env)
            device_service.update(s, tenant_id(), device_id, body, _settings().secret_key,
                                  allow_local=_settings().allow_local_devices,
                                  networks=device_networks.policy(_settings()))
    except device_forms.FormProblems as exc:
        return _render_device(device_id, exc.fields, 422)
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return _render_device(device_id, exc.details.get("fields") or {"_form": [exc.message]}, 422)
    session.current().flash("ok", "Saved.")
    return redirect(url_for("console.device_page", device_id=device_id))


@blp.post("/devices/<device_id>/delete")
def device_delete(device_id: str):
    """Delete a device with no run queued or running on it."""
    try:
        with db.session() as s:
            device_service.delete(s, tenant_id(), device_id)
    except Conflict as exc:
        session.current().flash("error", exc.message)
        return redirect(url_for("console.device_page", device_id=device_id))
    device_test.forget(tenant_id(), device_id)
    session.current().flash("ok", f"Device {device_id} deleted.")
    return redirect(url_for("console.devices"))


@blp.post("/devices/<device_id>/test")
def device_test_now(device_id: str):
    """Test the device; the result shows on the page it was asked from."""
    result = device_test.run_test(tenant_id(), device_id)
    if result["ok"]:
        session.current().flash("ok", f"{device_id}: reachable in {result['latency_ms']} ms.")
    else:
        session.current().flash("error", f"{device_id}: {result['error']['code']}: {result['error']['message']}")
    back = url_for("console.devices") if request.form.get("back") == "list" else url_for(
        "console.device_page", device_id=device_id)
    return redirect(back)
