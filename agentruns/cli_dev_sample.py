"""The sample run of `agentruns dev`: a short script on the `local` device, followed live through the SDK.

Its output is printed with a gutter, apart from the supervisor's own lines, while the services are
watched: a service that dies ends the wait at once.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from agentruns.vocabulary import SUCCEEDED

if TYPE_CHECKING:
    from agentruns.client import Client

SAMPLE_PROMPT = "Say hello, show me this prompt, and leave a file in the workspace."
# A script file rather than an inline command: the custom provider runs the command under the user's
# $SHELL, and `sh ./sample.sh` works the same from bash, zsh or fish.
SAMPLE_SCRIPT = """\
# The agentruns dev sample run; `agentruns dev` rewrites this file on every start.
echo "Hello from run $AGENTRUNS_RUN_ID in $(pwd)"
echo "The prompt on stdin was: $(cat)"
for i in 1 2 3 4; do echo "working... step $i/4"; sleep 0.5; done
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $AGENTRUNS_RUN_ID" >> hello.txt
echo "appended a line to $(pwd)/hello.txt"
echo "(a line on stderr)" >&2
"""


def sample_run(client: Client, check: Callable[[], None]) -> bool:
    """Create the sample run, print its live events and its outcome; True if it succeeded (`check`: see above)."""
    run = client.agent_runs.create(prompt=SAMPLE_PROMPT, sandbox_id="local", provider="custom",
                                   command="sh ./sample.sh", timeout=60)
    click.secho(f"\nSample run {run['id']} (provider custom, command `sh ./sample.sh`), live output:", bold=True)
    printer = EventPrinter()
    for event in _while_healthy(client.agent_runs.stream(run["id"]), check, timeout=120):
        printer.show(event)
    run = client.agent_runs.get(run["id"])
    ok = run["status"] == SUCCEEDED
    error = f", error {run['error']['code']}: {run['error']['message']}" if run.get("error") else ""
    click.secho(f"Sample run {run['status']} (exit code {run['exit_code']}){error}", fg="green" if ok else "red")
    return ok


def _while_healthy(events: Iterator[dict], check: Callable[[], None], timeout: float) -> Iterator[dict]:
    """Yield from `events`, read in a thread, calling `check` twice a second meanwhile.

    The SDK's stream waits quietly through a silent connection and retries a dead API: a service that
    died must stop the wait at once, with its log, instead.
    """
    import queue
    import threading

    done = object()
    inbox: queue.Queue[object] = queue.Queue()

    def pump() -> None:
        try:
            for event in events:
                inbox.put(event)
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            inbox.put(exc)
        else:
            inbox.put(done)

    threading.Thread(target=pump, name="sample-run-events", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sample run did not finish within {timeout:.0f} s")
        try:
            item = inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        if item is done:
            return
        if isinstance(item, Exception):
            raise item
        yield item  # type: ignore[misc]  # anything else in the inbox is an event dict


class EventPrinter:
    """Prints run events: output with a gutter at each line start (stderr's in red), statuses, notes."""

    def __init__(self) -> None:
        self.at_line_start = True

    def show(self, event: dict) -> None:
        """Print one event (from the SDK's stream)."""
        kind, data = event.get("type"), event.get("data")
        if kind in ("stdout", "stderr") and isinstance(data, str):
            gutter = click.style("  ! ", fg="red") if kind == "stderr" else click.style("  | ", dim=True)
            for piece in data.splitlines(keepends=True):
                click.echo((gutter if self.at_line_start else "") + piece, nl=False)
                self.at_line_start = piece.endswith("\n")
        elif kind == "status" and isinstance(data, dict):
            self._line(f"  [{data.get('status')}]", fg="cyan")
        elif kind == "note" and isinstance(data, dict):  # from the service, e.g. "live output capped"
            self._line(f"  · {data.get('note')}", dim=True)

    def _line(self, text: str, **style: object) -> None:
        click.secho(("" if self.at_line_start else "\n") + text, **style)  # type: ignore[arg-type]
        self.at_line_start = True
