"""How a device is reached: `get_driver(spec)` returns the ssh or local driver for it."""
from __future__ import annotations

from typing import TypeGuard

from .base import AttachTicket, DetachedDriver, DeviceSpec, Driver, DriverError, ExecRequest, ExecResult
from .ssh_connect import HostKeyCallback

__all__ = ["AttachTicket", "DetachedDriver", "DeviceSpec", "Driver", "DriverError", "ExecRequest", "ExecResult",
           "detaches", "get_driver"]


def get_driver(spec: DeviceSpec, on_host_key: HostKeyCallback | None = None, *,
               device_lost_seconds: float = 300.0) -> Driver:
    """Return the driver for spec.driver ("ssh" or "local"); on_host_key and device_lost_seconds (how
    long a run's device may stay unreachable) only matter for ssh."""
    if spec.driver == "ssh":
        from .ssh import SSHDriver

        return SSHDriver(spec, on_host_key=on_host_key, device_lost_seconds=device_lost_seconds)
    if spec.driver == "local":
        from .local import LocalDriver

        return LocalDriver(spec)
    raise ValueError(f"unknown driver {spec.driver!r} (expected 'ssh' or 'local')")


def detaches(driver: Driver) -> TypeGuard[DetachedDriver]:
    """True for a driver whose commands outlive their connection and worker (they can be re-attached).

    The local driver's commands are the worker's children: they end with it, as they always did.
    """
    return callable(getattr(driver, "attach", None))
