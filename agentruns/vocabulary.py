"""The words the API speaks: run statuses, event types, providers, device kinds. The one definition.

Pure constants, so the SDKs, the CLI and the MCP server can use them without importing the server;
the server (core.models, providers, app.api.schemas) imports them from here, and migration 0003 puts
the same lists into CHECK constraints.
"""
from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """queued -> running -> succeeded | failed | canceled; queued -> canceled.

    `queued` is this service's addition to the seed contract (backlog an operator can see).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Plain str values (not enum members) for SQL parameters and JSON.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = (s.value for s in RunStatus)
STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELED})
LIVE: frozenset[str] = frozenset({QUEUED, RUNNING})

# A run's event log: status changes, output chunks, and notes from the service (e.g. "live output
# capped"), which carry {"note": "..."} and no status.
EVENT_TYPES = ("status", "stdout", "stderr", "note")

# The API's provider strings; `claude` is an alias of `claude-code`. providers.REGISTRY is keyed by
# exactly these (a test and an import-time check hold it to that).
PROVIDERS = ("claude-code", "claude", "codex", "osa", "pi", "hermes", "custom")
DEFAULT_PROVIDER = "claude-code"

KINDS = ("sandbox", "computer")

# Webhook events, one per run status a receiver can subscribe to ("run.*": all of them); the outbox
# trigger (migration 0006) writes them.
WEBHOOK_EVENT_TYPES = ("run.queued", "run.started", "run.succeeded", "run.failed", "run.canceled")
WEBHOOK_ALL_EVENTS = "run.*"
# A delivery is pending until its receiver answers 2xx (delivered) or it is given up (failed).
DELIVERY_STATES = ("pending", "delivered", "failed")

# An API key's role: a `tenant` key uses the API for its tenant; an `operator` key can do that too and
# also reaches the operator's endpoints (app.auth.operator_required). Migration 0007's CHECK lists them.
KEY_ROLES = ("tenant", "operator")
TENANT_ROLE, OPERATOR_ROLE = KEY_ROLES
