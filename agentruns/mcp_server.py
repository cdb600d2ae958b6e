"""`agentruns mcp`: an MCP server over stdio (the official SDK's MCPServer, formerly FastMCP).

Tools: agent_run (dispatch a prompt to a device and wait for the result), agent_run_get, agent_run_list,
agent_run_cancel. Each one calls the REST API through the async Python SDK (AsyncClient, no threads), so it
needs AGENTRUNS_API_URL and AGENTRUNS_API_KEY (or --api-url/--api-key).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agentruns.client_async import AsyncClient
from agentruns.client_errors import AgentrunsError
from agentruns.vocabulary import DEFAULT_PROVIDER, KINDS, PROVIDERS, STATUSES, TERMINAL

if TYPE_CHECKING:
    # mypy cannot take a Literal's values from a tuple; to it these are the strings they are at runtime.
    Provider = str
    Status = str
    Kind = str
else:
    # The tools' JSON schema lists the allowed values (an "enum") from the one vocabulary.
    Provider = Literal[PROVIDERS]
    Status = Literal[STATUSES]
    Kind = Literal[KINDS]

# Long-poll in slices so the tool can report progress and notice the caller's cancellation in between.
POLL_SLICE = 10


def _tool_error(exc: AgentrunsError) -> ToolError:
    fields = exc.details.get("fields") or {}
    detail = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in fields.items())
    text = f"{exc.message} (code={exc.code}"
    text += f", status={exc.status}" if exc.status else ""
    text += f", request_id={exc.request_id})" if exc.request_id else ")"
    return ToolError(f"{text}{' - ' + detail if detail and detail not in exc.message else ''}")


def build_server(client: AsyncClient) -> MCPServer:
    """An MCPServer whose tools use `client`."""
    server = MCPServer("agentruns", instructions=(
        "Dispatch natural-language tasks to coding agents (Claude Code, Codex, pi, Hermes, OSA or a custom "
        "command) running on registered devices (sandboxes and computers), and read the results."))

    async def call(request: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await request
        except AgentrunsError as exc:
            raise _tool_error(exc) from None

    @server.tool()
    async def agent_run(ctx: Context, prompt: str, target_id: str | None = None, sandbox_id: str | None = None,
                        computer_id: str | None = None, target_kind: Kind | None = None,
                        provider: Provider = DEFAULT_PROVIDER, command: str | None = None, model: str | None = None,
                        cwd: str | None = None, timeout: int | None = None, metadata: dict[str, Any] | None = None,
                        env: dict[str, str] | None = None, idempotency_key: str | None = None,
                        wait_seconds: int = 600) -> dict[str, Any]:
        """Run a prompt with a coding agent on a device and wait for the result.

        Name the device with target_id, sandbox_id or computer_id. provider "custom" needs `command` (a shell
        command that gets the prompt on stdin). Returns the run record: status (succeeded, failed, canceled),
        output, stderr, exit_code, error. If the run is still going after wait_seconds, the current record is
        returned (status queued or running): call agent_run_get with its id to keep waiting.
        """
        key = idempotency_key or f"mcp-{uuid.uuid4()}"
        run = await call(client.agent_runs.create(
            prompt=prompt, target_id=target_id, sandbox_id=sandbox_id, computer_id=computer_id, target_kind=target_kind,
            provider=provider, command=command, model=model, cwd=cwd, timeout=timeout, metadata=metadata, env=env,
            idempotency_key=key))
        started = time.monotonic()
        deadline = started + max(0, wait_seconds)
        while run["status"] not in TERMINAL and time.monotonic() < deadline:
            await ctx.report_progress(time.monotonic() - started, None, f"run {run['id']} {run['status']}")
            step = max(1, min(POLL_SLICE, int(deadline - time.monotonic())))
            run = await call(client.agent_runs.get(run["id"], wait=step))
        return run

    @server.tool()
    async def agent_run_get(run_id: str, wait_seconds: int = 0) -> dict[str, Any]:
        """Get a run by id; wait_seconds (at most 600) waits for it to finish first."""
        return await call(client.agent_runs.get(run_id, wait=min(max(wait_seconds, 0), 600) or None))

    @server.tool()
    async def agent_run_list(status: Status | None = None, target_id: str | None = None,
                             provider: Provider | None = None, metadata: dict[str, str] | None = None,
                             limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """List runs, newest first: {"data": [summaries], "next_cursor"}; pass next_cursor as cursor for more."""
        return await call(client.agent_runs.page(status=status, target_id=target_id, provider=provider,
                                                 metadata=metadata, limit=min(max(limit, 1), 100), cursor=cursor))

    @server.tool()
    async def agent_run_cancel(run_id: str) -> dict[str, Any]:
        """Cancel a run: a queued run ends at once, a running run is stopped by its worker."""
        return await call(client.agent_runs.cancel(run_id))

    return server


def serve(api_url: str | None, api_key: str | None) -> None:
    """Run the MCP server on stdin/stdout until the client closes it."""
    async def main() -> None:
        async with AsyncClient(base_url=api_url, api_key=api_key) as client:
            await build_server(client).run_stdio_async()

    anyio.run(main)
