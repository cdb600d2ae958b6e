"""Provider adapters, keyed by the API's `provider` string.

Each adapter turns a RunSpec into an Invocation (argv, stdin, env) and a CLI's output into a
ParsedResult. They do no I/O and never import a driver.
"""
from __future__ import annotations

from agentruns.vocabulary import PROVIDERS as PROVIDER_NAMES
from providers.base import Invocation, ParsedResult, Provider, ProviderSettings, RunSpec
from providers.claude_code import ClaudeCode
from providers.codex import Codex
from providers.custom import Custom
from providers.hermes import Hermes
from providers.osa import Osa
from providers.pi import Pi

_claude_code = ClaudeCode()

PROVIDERS: dict[str, Provider] = {
    "claude-code": _claude_code,
    "claude": _claude_code,
    "codex": Codex(),
    "pi": Pi(),
    "hermes": Hermes(),
    "osa": Osa(),
    "custom": Custom(),
}

# The API's provider strings are defined once (agentruns.vocabulary); every one needs an adapter.
if set(PROVIDERS) != set(PROVIDER_NAMES):
    raise ImportError(f"providers registry {sorted(PROVIDERS)} differs from the API's {sorted(PROVIDER_NAMES)}")


def get_provider(name: str) -> Provider:
    """The adapter registered under `name`; KeyError names the known providers."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None


__all__ = [
    "PROVIDERS",
    "Invocation",
    "ParsedResult",
    "Provider",
    "ProviderSettings",
    "RunSpec",
    "get_provider",
]
