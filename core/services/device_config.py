"""Turn a device record into what a driver and a provider need (secrets decrypted only in memory)."""
from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass, field

from sqlalchemy import update
from sqlalchemy.engine import Row

from core import db
from core.crypto import decrypt_json
from core.device_networks import DeviceNetworks
from core.models import Device
from drivers.base import DeviceSpec
from providers.base import ProviderSettings

log = logging.getLogger("agentruns.worker")
LOCAL_DISABLED = ("the local driver runs commands on this service's own hosts; this server does not allow it "
                  "(AGENTRUNS_ALLOW_LOCAL_DEVICES)")


@dataclass(frozen=True)
class DeviceConfig:
    spec: DeviceSpec
    env: dict[str, str] = field(repr=False)
    providers: dict[str, ProviderSettings] = field(repr=False)
    username: str | None

    def provider_settings(self, name: str) -> ProviderSettings:
        # `claude` is an alias of `claude-code`; settings under either name apply to both.
        alias = {"claude": "claude-code", "claude-code": "claude"}.get(name)
        return self.providers.get(name) or (self.providers.get(alias) if alias else None) or ProviderSettings()


def load(device: Device | Row, secret_key: str, *, networks: DeviceNetworks | None) -> DeviceConfig:
    """Decrypt a device's secrets (an ORM Device or a Core row of the devices table) into a DeviceConfig.

    networks: the allow-list (core.device_networks.policy(settings)) the driver checks every address
    against before it connects; None only where nothing connects (or in a test of something else).
    """
    secrets = decrypt_json(secret_key, device.secrets_enc)
    spec = DeviceSpec(
        id=f"{device.tenant_id}/{device.id}", driver=device.driver, host=device.host, port=device.port or 22,
        username=device.username, private_key=secrets.get("private_key"), password=secrets.get("password"),
        host_key=device.host_key, trust_on_first_use=device.trust_on_first_use, login_shell=device.login_shell,
        address_check=networks.refusal if networks is not None else None,
    )
    provider_env = secrets.get("provider_env", {})
    providers = {}
    for name in set(device.providers or {}) | set(provider_env):
        public = (device.providers or {}).get(name, {})
        providers[name] = ProviderSettings(executable=public.get("executable"),
                                           extra_args=tuple(public.get("extra_args") or ()),
                                           env=provider_env.get(name, {}))
    username = device.username if device.driver == "ssh" else getpass.getuser()
    return DeviceConfig(spec=spec, env=secrets.get("env", {}), providers=providers, username=username)


def pin_host_key(tenant_id, device_id: str):
    """A callback for trust-on-first-use: store the first key seen, never overwrite a pinned one."""

    def store(line: str) -> None:
        with db.session() as s:
            s.execute(update(Device).where(Device.tenant_id == tenant_id, Device.id == device_id,
                                           Device.host_key.is_(None)).values(host_key=line))
        log.info("pinned host key for device %s on first use", device_id)

    return store
