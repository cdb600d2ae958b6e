"""What a provider adapter is: pure functions from a run to an invocation and from output to a result.

Providers do no I/O and never import a driver.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ProviderSettings:
    """Per-device settings for one provider: where its CLI lives and how to call it."""

    executable: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    prompt: str
    model: str | None = None
    command: str | None = None  # custom provider only: a shell command the user wrote
    device_username: str | None = None
    settings: ProviderSettings = field(default_factory=ProviderSettings)


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    stdin: bytes
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # Set to the path of a private copy of stdin by a driver that has one (ExecRequest.stdin_file_env).
    stdin_file_env: str | None = None


@dataclass
class ParsedResult:
    succeeded: bool
    output: str
    error_code: str | None = None  # "provider_error" | "nonzero_exit" | None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    session_id: str | None = None


class Provider(Protocol):
    name: str

    def build(self, spec: RunSpec) -> Invocation: ...

    def parse(self, exit_code: int | None, stdout: str, stderr: str) -> ParsedResult: ...
