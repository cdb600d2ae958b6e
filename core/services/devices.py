"""Device registry: create, update, delete; secrets are encrypted here and never leave as output."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import quotas
from core.crypto import decrypt_json, encrypt_json
from core.device_networks import DeviceNetworks
from core.errors import Conflict, Invalid, NotFound
from core.models import QUEUED, RUNNING, Device, Run
from core.services.device_config import LOCAL_DISABLED

SECRET_FIELDS = ("private_key", "password")


def _refuse_local(data: dict, allow_local: bool) -> None:
    """Whoever holds an API key must not be able to run commands as the service itself."""
    if data.get("driver") == "local" and not allow_local:
        raise Invalid.field("driver", LOCAL_DISABLED)


def _refuse_address(driver: str | None, host: str | None, networks: DeviceNetworks | None) -> None:
    """An ssh device may point only at the networks the operator allows (checked again at connect)."""
    if networks is None or driver != "ssh" or not host:
        return
    reason = networks.check_host(host)
    if reason:
        raise Invalid.field("host", reason, code="device_address_refused")


def _split_providers(providers: dict) -> tuple[dict, dict]:
    """Separate provider settings into the public part (executable, args) and the secret env."""
    public, secret_env = {}, {}
    for name, settings in providers.items():
        settings = dict(settings)
        env = settings.pop("env", None)
        public[name] = settings
        if env:
            secret_env[name] = env
    return public, secret_env


def _apply(device: Device, data: dict, secret_key: str) -> None:
    secrets = decrypt_json(secret_key, device.secrets_enc)
    for name in SECRET_FIELDS:
        if name in data:
            value = data.pop(name)
            if value is None:
                secrets.pop(name, None)
            else:
                secrets[name] = value
    if "env" in data:
        secrets["env"] = data.pop("env")
    if "providers" in data:
        # Per provider: the given settings replace that provider's (env included), null removes
        # it, and providers not named keep theirs, so a PATCH need not resend every secret.
        public, secret_env = dict(device.providers or {}), dict(secrets.get("provider_env", {}))
        for name, settings in data.pop("providers").items():
            public.pop(name, None), secret_env.pop(name, None)
            if settings is not None:
                new_public, new_env = _split_providers({name: settings})
                public.update(new_public), secret_env.update(new_env)
        device.providers = public
        secrets["provider_env"] = secret_env
    for key, value in data.items():
        setattr(device, key, value)
    device.secrets_enc = encrypt_json(secret_key, {k: v for k, v in secrets.items() if v})


def create(s: Session, tenant_id: uuid.UUID, data: dict, secret_key: str, *, allow_local: bool = False,
           networks: DeviceNetworks | None, max_devices: int = 0) -> Device:
    """A new device; networks is the allow-list its host must pass (None: not checked); max_devices is the
    tenant's quota (AGENTRUNS_QUOTA_DEVICES, 0: none)."""
    _refuse_local(data, allow_local)
    _refuse_address(data.get("driver"), data.get("host"), networks)
    quotas.check_devices(s, tenant_id, max_devices)  # last: its lock is held until the device commits
    device = Device(tenant_id=tenant_id, id=data.pop("id", None) or str(uuid.uuid4()), labels={}, providers={},
                    pool="default",
                    port=22, max_concurrent_runs=1, trust_on_first_use=False, login_shell=True)
    _apply(device, data, secret_key)
    s.add(device)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"a device with id {device.id!r} already exists", code="device_exists") from None
    return device


# Row locks held until the transaction ends. A delete takes FOR UPDATE, which waits for runs being
# created on the device (they hold FOR KEY SHARE); an update takes FOR NO KEY UPDATE, which waits
# for a delete (and then finds the device gone) but not for run creation.
_LOCKS = {"delete": {"nowait": False}, "update": {"key_share": True}}


def get(s: Session, tenant_id: uuid.UUID, device_id: str, *, lock: str | None = None) -> Device:
    """A device of this tenant, or NotFound; lock ("update" or "delete") locks its row for that."""
    # PostgreSQL cannot even compare a string holding NUL; no device id has one.
    device = (s.get(Device, (tenant_id, device_id), with_for_update=_LOCKS[lock] if lock else None,
                    populate_existing=lock is not None)
              if "\x00" not in device_id else None)
    if device is None:
        raise NotFound(f"device {device_id!r} not found")
    return device


def update(s: Session, tenant_id: uuid.UUID, device_id: str, data: dict, secret_key: str, *,
           allow_local: bool = False, networks: DeviceNetworks | None) -> Device:
    """Change a device; a new host (or driver) must pass the allow-list `networks` (None: not checked)."""
    device = get(s, tenant_id, device_id, lock="update")
    if device.driver != "local":  # sending back a local device's own driver changes nothing
        _refuse_local(data, allow_local)
    readdressed = "host" in data or "driver" in data
    _apply(device, data, secret_key)
    if readdressed:
        _refuse_address(device.driver, device.host, networks)
    if device.driver == "ssh" and not (device.host and device.username):
        raise Invalid("host, username: required for driver ssh",
                      details={"fields": {name: ["required for driver ssh"] for name in ("host", "username")}})
    s.flush()
    return device


def delete(s: Session, tenant_id: uuid.UUID, device_id: str) -> None:
    """Delete a device with no run queued or running on it (Conflict otherwise)."""
    # Locked first: a run being created on it holds FOR KEY SHARE until it commits, and the count
    # below then sees that run (READ COMMITTED reads anew per statement).
    device = get(s, tenant_id, device_id, lock="delete")
    live = s.execute(select(func.count()).select_from(Run).where(
        Run.tenant_id == tenant_id, Run.target_id == device_id, Run.status.in_((QUEUED, RUNNING)))).scalar_one()
    if live:
        raise Conflict(f"device {device_id!r} has {live} run(s) in flight", code="device_busy")
    s.delete(device)


def list_all(s: Session, tenant_id: uuid.UUID) -> list[Device]:
    return list(s.execute(select(Device).where(Device.tenant_id == tenant_id).order_by(Device.id)).scalars())


def to_out(device: Device, secret_key: str) -> dict:
    """The public view of a device: which secrets exist, never their values."""
    secrets = decrypt_json(secret_key, device.secrets_enc)
    out = {c: getattr(device, c) for c in ("id", "kind", "name", "driver", "host", "port", "username", "host_key",
                                           "trust_on_first_use", "login_shell", "labels", "pool", "max_concurrent_runs",
                                           "default_cwd", "created_at", "updated_at")}
    providers = {name: dict(settings) for name, settings in (device.providers or {}).items()}
    for name, env in secrets.get("provider_env", {}).items():
        providers.setdefault(name, {})["env_names"] = sorted(env)
    out.update(providers=providers, has_private_key="private_key" in secrets, has_password="password" in secrets,
               env_names=sorted(secrets.get("env", {})))
    return out


_QUEUED_ON = text("SELECT id FROM runs WHERE tenant_id = :tenant_id AND target_id = :device_id AND status = 'queued' "
                  "ORDER BY created_at")


def queued_runs(conn, tenant_id: uuid.UUID, device_id: str) -> list[uuid.UUID]:
    """The ids of the device's queued runs, oldest first (to send them again after a pool change)."""
    return list(conn.execute(_QUEUED_ON, {"tenant_id": tenant_id, "device_id": device_id}).scalars())
