"""`agentruns mcp` spawned over stdio and driven by the MCP SDK's own client, against the live API; and the
same server in-process on a fake transport (no server, no thread)."""
from __future__ import annotations

import json
import threading

import anyio
import httpx
import pytest
from mcp import Client as MCPClient
from mcp import StdioServerParameters
from mcp.types import TextContent

from agentruns.client_async import AsyncClient
from agentruns.mcp_server import build_server
from agentruns.vocabulary import DEFAULT_PROVIDER, KINDS, PROVIDERS, STATUSES
from tests.stack import AGENTRUNS
from tests.test_client_sdk import new_tenant
from tests.test_sdk_core import FakeAPI, error, ok


@pytest.fixture()
def tenant(app, live_server, tmp_path):
    return new_tenant(live_server, tmp_path)


def run_session(tenant, body) -> None:
    """Spawn `agentruns mcp` with the tenant's URL and key and run `body(client)` in one MCP session."""
    params = StdioServerParameters(command=AGENTRUNS, args=["mcp"],
                                   env={"AGENTRUNS_API_URL": tenant.url, "AGENTRUNS_API_KEY": tenant.key})

    async def main() -> None:
        with anyio.fail_after(60):
            async with MCPClient(params) as client:
                await body(client)

    anyio.run(main)


def result_json(result) -> dict:
    """A tool's structured result; the text content carries the same JSON for clients without structure."""
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


@pytest.mark.e2e
def test_agent_run_dispatches_and_waits(tenant):
    async def body(client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"agent_run", "agent_run_get", "agent_run_list", "agent_run_cancel"}
        assert {"prompt", "sandbox_id", "computer_id", "target_id", "provider", "command", "model", "cwd",
                "timeout", "metadata", "env", "idempotency_key"} <= set(tools["agent_run"].input_schema["properties"])
        run = result_json(await client.call_tool("agent_run", {
            "prompt": "from mcp", "sandbox_id": "box", "provider": "custom", "command": 'echo "got:$(cat)"',
            "metadata": {"via": "mcp"}}))
        assert run["status"] == "succeeded" and run["output"] == "got:from mcp\n" and run["exit_code"] == 0
        got = result_json(await client.call_tool("agent_run_get", {"run_id": run["id"]}))
        assert got["id"] == run["id"] and got["status"] == "succeeded"
        listed = result_json(await client.call_tool("agent_run_list", {"metadata": {"via": "mcp"}}))
        assert [r["id"] for r in listed["data"]] == [run["id"]] and listed["next_cursor"] is None
        failed = result_json(await client.call_tool("agent_run", {
            "prompt": "p", "target_id": "box", "provider": "custom", "command": "exit 5"}))
        assert failed["status"] == "failed" and failed["exit_code"] == 5

    run_session(tenant, body)


@pytest.mark.e2e
def test_cancel_and_errors(tenant):
    async def body(client):
        run = result_json(await client.call_tool("agent_run", {
            "prompt": "p", "sandbox_id": "box", "provider": "custom", "command": "sleep 30", "wait_seconds": 1}))
        assert run["status"] in ("queued", "running")  # returned when wait_seconds ran out
        result_json(await client.call_tool("agent_run_cancel", {"run_id": run["id"]}))
        done = result_json(await client.call_tool("agent_run_get", {"run_id": run["id"], "wait_seconds": 15}))
        assert done["status"] == "canceled"
        missing = await client.call_tool("agent_run_get", {"run_id": "nope"})
        assert missing.is_error and "not found" in missing.content[0].text and "request_id=" in missing.content[0].text
        invalid = await client.call_tool("agent_run", {"prompt": "p", "sandbox_id": "box", "provider": "custom"})
        assert invalid.is_error and "command: required for provider custom" in invalid.content[0].text

    run_session(tenant, body)


@pytest.mark.unit
def test_tools_run_on_the_async_client_with_the_vocabularys_choices() -> None:
    threads: set[str] = set()
    api = FakeAPI(ok({"id": "r-1", "status": "queued"}, 201), ok({"id": "r-1", "status": "succeeded"}),
                  error(404, "not_found"))

    def handler(request: httpx.Request) -> httpx.Response:
        threads.add(threading.current_thread().name)
        return api(request)

    async def main() -> None:
        http = httpx.AsyncClient(base_url="http://api.test", transport=httpx.MockTransport(handler))
        async with AsyncClient("http://api.test", "key-1", http=http) as client, \
                MCPClient(build_server(client)) as mcp:
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            run_args = tools["agent_run"].input_schema["properties"]
            assert run_args["provider"]["enum"] == list(PROVIDERS)
            assert run_args["provider"]["default"] == DEFAULT_PROVIDER
            assert run_args["target_kind"]["anyOf"][0]["enum"] == list(KINDS)
            list_args = tools["agent_run_list"].input_schema["properties"]
            assert list_args["status"]["anyOf"][0]["enum"] == list(STATUSES)
            assert list_args["provider"]["anyOf"][0]["enum"] == list(PROVIDERS)
            run = await mcp.call_tool("agent_run", {"prompt": "p", "sandbox_id": "box", "provider": "codex"})
            assert not run.is_error and run.structured_content == {"id": "r-1", "status": "succeeded"}
            bad = await mcp.call_tool("agent_run", {"prompt": "p", "sandbox_id": "box", "provider": "gpt"})
            assert bad.is_error and len(api.requests) == 2  # refused by the schema, never sent
            missing = await mcp.call_tool("agent_run_get", {"run_id": "nope"})
            text = missing.content[0]
            assert isinstance(text, TextContent) and missing.is_error
            assert "not_found happened (code=not_found, status=404" in text.text

    anyio.run(main)
    assert threads == {threading.main_thread().name}  # the SDK ran on the event loop, not in worker threads
    create = api.requests[0]
    assert create.headers["Idempotency-Key"].startswith("mcp-")
    assert json.loads(create.content) == {"prompt": "p", "sandbox_id": "box", "provider": "codex"}
