"""How a device is reached: `get_driver(spec)` returns the ssh or local driver for it."""
from __future__ import annotations

from .base import DeviceSpec, Driver, DriverError, ExecRequest, ExecResult
from .ssh_connect import HostKeyCallback

__all__ = ["DeviceSpec", "Driver", "DriverError", "ExecRequest", "ExecResult", "get_driver"]


def get_driver(spec: DeviceSpec, on_host_key: HostKeyCallback | None = None) -> Driver:
    """Return the driver for spec.driver ("ssh" or "local"); on_host_key only matters for ssh."""
    if spec.driver == "ssh":
        from .ssh import SSHDriver

        return SSHDriver(spec, on_host_key=on_host_key)
    if spec.driver == "local":
        from .local import LocalDriver

        return LocalDriver(spec)
    raise ValueError(f"unknown driver {spec.driver!r} (expected 'ssh' or 'local')")
