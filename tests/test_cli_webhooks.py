"""`agentruns webhooks ...` and `sandbox prompt --webhook-url` through click's runner, against the live API,
worker and beat; deliveries reach a real HTTP receiver on loopback (tests.webhook_receiver)."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from click.testing import CliRunner

from agentruns import webhooks as signing
from agentruns.cli import main
from tests import test_cli_client
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
ONCE = "the secret is shown only once"
# The fixtures of the CLI's own tests: a new tenant, its SDK client, and `agentruns ARGS...` in-process.
tenant, sdk, cli = test_cli_client.tenant, test_cli_client.sdk, test_cli_client.cli


@pytest.fixture()
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def field(output: str, name: str) -> str:
    """The value of a `name: value` line."""
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name!r} line in:\n{output}")


def test_create_list_show_update_delete(cli):
    result = cli("webhooks", "create", "http://127.0.0.1:9/a", "--event", "run.succeeded", "--event", "run.failed",
                 "--target-id", "box", "--provider", "custom", "-m", "team=a", "--description", "ci hook")
    assert result.exit_code == 0, result.output
    first_line, *_ = result.stdout.splitlines()
    hook_id = first_line.split()[1]
    assert first_line == f"webhook {hook_id} created"
    assert field(result.stdout, "secret").startswith("whsec_") and ONCE in result.stdout
    assert field(result.stdout, "events") == "run.failed, run.succeeded"
    assert field(result.stdout, "filters") == "target=box provider=custom team=a"
    created = cli("webhooks", "create", "http://127.0.0.1:9/b", "--disabled", "--json")
    assert created.exit_code == 0, created.output
    other = json.loads(created.stdout)  # --json: the record, secret included, and nothing else
    assert other["secret"].startswith("whsec_") and other["enabled"] is False and other["events"] == ["run.*"]

    table = cli("webhooks", "list")
    assert table.exit_code == 0 and "whsec_" not in table.stdout
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "EVENTS", "FILTERS", "URL", "DESCRIPTION"] and len(lines) == 3
    assert lines[1].split()[:2] == [hook_id, "enabled"] and lines[2].split()[:2] == [other["id"], "disabled"]
    assert [h["id"] for h in json.loads(cli("webhooks", "list", "--json").stdout)["data"]] == [hook_id, other["id"]]
    shown = cli("webhooks", "show", hook_id)
    assert shown.exit_code == 0 and field(shown.stdout, "description") == "ci hook" and "whsec_" not in shown.stdout
    assert field(shown.stdout, "url") == "http://127.0.0.1:9/a" and field(shown.stdout, "state") == "enabled"

    # Filter options merge into the current filters; --clear-filters starts from none.
    result = cli("webhooks", "update", hook_id, "--target-id", "other", "-m", "env=prod")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"webhook {hook_id} updated\n")
    assert set(field(result.stdout, "filters").split()) == {"target=other", "provider=custom", "team=a", "env=prod"}
    result = cli("webhooks", "update", other["id"], "--enable", "--clear-filters", "--provider", "codex",
                 "--event", "run.canceled", "--url", "http://127.0.0.1:9/c", "--json")
    updated = json.loads(result.stdout)
    assert updated["enabled"] is True and updated["url"] == "http://127.0.0.1:9/c"
    assert updated["events"] == ["run.canceled"]
    assert updated["filters"] == {"target_id": None, "provider": "codex", "metadata": {}}
    cleared = json.loads(cli("webhooks", "update", hook_id, "--clear-filters", "--disable", "--json").stdout)
    assert cleared["filters"] == {"target_id": None, "provider": None, "metadata": {}} and cleared["enabled"] is False
    nothing = cli("webhooks", "update", hook_id)
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output

    assert cli("webhooks", "delete", other["id"]).stdout == f"webhook {other['id']} deleted\n"
    gone = cli("webhooks", "show", other["id"])
    assert gone.exit_code == 1 and "not found" in gone.stderr and gone.stdout == ""


def test_rotate_secret_prints_the_new_secret_once(cli):
    created = json.loads(cli("webhooks", "create", "http://127.0.0.1:9/r", "--json").stdout)
    result = cli("webhooks", "rotate-secret", created["id"])
    assert result.exit_code == 0, result.output
    secret = field(result.stdout, "secret")
    assert secret.startswith("whsec_") and secret != created["secret"] and ONCE in result.stdout
    assert "the previous secret also signs until" in result.stdout
    per_run = json.loads(cli("webhooks", "rotate-secret", "per-run", "--json").stdout)
    assert per_run["id"] == "per-run" and per_run["secret"].startswith("whsec_")
    shown = cli("webhooks", "show", "per-run")
    assert field(shown.stdout, "url") == "(each run's own webhook_url)" and "whsec_" not in shown.stdout


def test_errors_are_messages_and_exit_codes(cli):
    bad = cli("webhooks", "create", "not-a-url")
    assert bad.exit_code == 1 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert "code: validation_error · HTTP 422" in bad.stderr and "  url: " in bad.stderr
    refused = cli("webhooks", "create", "ftp://example.com/hook")
    assert refused.exit_code == 1 and "  url: " in refused.stderr
    assert cli("webhooks", "create", "http://127.0.0.1:9/x", "--event", "run.nope").exit_code == 2
    assert cli("webhooks", "create", "http://127.0.0.1:9/x", "-m", "novalue").exit_code == 2
    missing = str(uuid.uuid4())
    for args in (("show", missing), ("show", "nope"), ("delete", missing), ("update", missing, "--enable"),
                 ("rotate-secret", missing), ("deliveries", missing)):
        result = cli("webhooks", *args)
        assert result.exit_code == 1, args
        assert "not found" in result.stderr and "code: not_found · HTTP 404" in result.stderr, args
    hook = json.loads(cli("webhooks", "create", "http://127.0.0.1:9/e", "--json").stdout)
    result = cli("webhooks", "redeliver", hook["id"], missing)
    assert result.exit_code == 1 and f"delivery '{missing}' not found" in result.stderr
    assert cli("webhooks", "deliveries", hook["id"], "--state", "bogus").exit_code == 2
    assert cli("webhooks", "deliveries", hook["id"], "--limit", "0").exit_code == 2
    no_key = CliRunner().invoke(main, ["webhooks", "list", "--api-url", "http://127.0.0.1:9"],
                                env={"AGENTRUNS_API_KEY": None})
    assert no_key.exit_code == 2 and "no API key" in no_key.output


def test_deliveries_of_a_real_run_and_redeliver(cli, sdk, receiver):
    hook = json.loads(cli("webhooks", "create", receiver.url("/cli"), "--json").stdout)
    per_run = json.loads(cli("webhooks", "rotate-secret", "per-run", "--json").stdout)
    result = cli("sandbox", "prompt", "box", "--provider", "custom", "--runtime-command", "echo hi",
                 "--webhook-url", receiver.url("/own"), "--json", "--", "p")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded" and run["webhook_url"] == receiver.url("/own")
    for path, secret in (("/cli", hook["secret"]), ("/own", per_run["secret"])):
        got = receiver.wait_for(path, 3)
        events = [signing.verify(r.body, r.headers[signing.SIGNATURE_HEADER], secret) for r in got]
        assert [e["type"] for e in events] == ["run.queued", "run.started", "run.succeeded"], path
    deadline = time.monotonic() + 15  # the receiver answers before the dispatcher records the delivery
    while time.monotonic() < deadline and sum(
            d["state"] == "delivered" for d in sdk.webhooks.deliveries(hook["id"])) < 3:
        time.sleep(0.1)

    table = cli("webhooks", "deliveries", hook["id"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "EVENT", "RUN", "ATTEMPTS", "LAST", "CREATED"] and len(lines) == 4
    cells = sorted(line.split()[1:6] for line in lines[1:])  # run.started and run.succeeded may tie on time
    assert cells == [["delivered", event, run["id"], "1", "HTTP"]
                     for event in ("run.queued", "run.started", "run.succeeded")]
    page = cli("webhooks", "deliveries", hook["id"], "--limit", "2")
    assert len(page.stdout.splitlines()) == 3 and page.stderr.startswith("more: --cursor ")
    cursor = page.stderr.split()[-1]
    rest = cli("webhooks", "deliveries", hook["id"], "--limit", "2", "--cursor", cursor)
    assert [line.split() for line in rest.stdout.splitlines()[1:]] == [lines[3].split()] and rest.stderr == ""
    every = json.loads(cli("webhooks", "deliveries", hook["id"], "--limit", "1", "--all", "--json").stdout)
    assert [d["id"] for d in every["data"]] == [line.split()[0] for line in lines[1:]]
    assert every["next_cursor"] is None and every["data"][0]["attempt_log"][0]["status_code"] == 200
    assert json.loads(cli("webhooks", "deliveries", hook["id"], "--state", "failed", "--json").stdout)["data"] == []
    own = json.loads(cli("webhooks", "deliveries", "per-run", "--run-id", run["id"], "--json").stdout)["data"]
    assert [d["url"] for d in own] == [receiver.url("/own")] * 3

    newest = every["data"][0]
    result = cli("webhooks", "redeliver", hook["id"], newest["id"])
    assert result.exit_code == 0, result.output
    new_id = result.stdout.split()[1]
    assert new_id != newest["id"]
    assert result.stdout == (f"delivery {new_id} pending: {newest['event_type']} {newest['event_id']} to "
                             f"{receiver.url('/cli')}\n")
    resent = receiver.wait_for("/cli", 4)[3]
    assert resent.headers[signing.EVENT_ID_HEADER] == newest["event_id"]
    same = json.loads(cli("webhooks", "deliveries", hook["id"], "--event-id", newest["event_id"], "--json").stdout)
    assert [d["id"] for d in same["data"]] == [new_id, newest["id"]]
