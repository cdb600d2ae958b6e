"""Follow a run in the terminal: live output, a spinner on a TTY, Ctrl-C handling, the final output."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from agentruns.client_errors import Conflict, WaitTimeout
from agentruns.vocabulary import TERMINAL

if TYPE_CHECKING:
    from rich.live import Live


def _elapsed(since: float) -> str:
    s = int(time.monotonic() - since)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Spinner:
    """Rich renderable that recomputes the elapsed time on every refresh."""

    def __init__(self, run_id: str, started: float):
        self.run_id, self.started, self.status = run_id, started, "queued"

    def __rich__(self):
        from rich.spinner import Spinner

        return Spinner("dots", text=f"run {self.run_id[:8]} {self.status} · {_elapsed(self.started)}",
                       style="dim")


class Terminal:
    """Where a followed run's output goes: stdout chunks to stdout, the rest to stderr."""

    def __init__(self, run_id: str, quiet: bool):
        self.quiet = quiet
        self.started = time.monotonic()
        self.spinner = _Spinner(run_id, self.started)
        self.live: Live | None = None
        self.stdout_text: list[str] = []
        self.stderr_text: list[str] = []

    def __enter__(self) -> Terminal:
        # A spinner only for a person watching stderr; pipes and CI logs get plain lines.
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            # stdout goes through rich only when it is the same kind of terminal; a piped stdout keeps its bytes.
            live = Live(self.spinner, console=Console(stderr=True), transient=True, refresh_per_second=8,
                        redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
            live.start()
            self.live = live
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self.live is not None:
            self.live.stop()
            self.live = None

    def event(self, event: dict) -> None:
        """Show one run event."""
        kind, data = event.get("type"), event.get("data")
        if kind in ("stdout", "stderr") and isinstance(data, str):
            (self.stdout_text if kind == "stdout" else self.stderr_text).append(data)
            if not self.quiet:
                stream = sys.stdout if kind == "stdout" else sys.stderr
                stream.write(data)
                stream.flush()
        elif kind == "note" and isinstance(data, dict) and not self.quiet:
            sys.stderr.write(f"· {data.get('note')}\n")
            sys.stderr.flush()
        elif kind == "status" and isinstance(data, dict):
            self.spinner.status = data.get("status", "?")
            if not self.quiet and data.get("status") not in ("queued", *TERMINAL):
                # sys.stderr, not click.echo: while the spinner runs it is rich's proxy, which keeps lines apart.
                sys.stderr.write(f"· {data.get('status')} ({_elapsed(self.started)})\n")
                sys.stderr.flush()


def _remainder(final: str | None, streamed: str) -> str:
    """What of the final text was not shown live: nothing if it all streamed, the tail if the stream was a
    prefix (a capped event log), or all of it when the provider's stdout differs from its answer."""
    final = final or ""
    if streamed and final.startswith(streamed):
        return final[len(streamed):]
    return final


def finish(term: Terminal, final: dict) -> None:
    """Print the final output (unless it was streamed already) and a one-line verdict on stderr."""
    if term.quiet:
        return
    streamed = "".join(term.stdout_text)
    rest = _remainder(final.get("output"), streamed)
    if rest:
        if streamed and not streamed.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.write(rest)
    written = streamed + rest
    if written and not written.endswith("\n") and sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()
    status = final["status"]
    if status != "succeeded":
        err_rest = _remainder(final.get("stderr"), "".join(term.stderr_text))
        if err_rest:
            sys.stderr.write(err_rest if err_rest.endswith("\n") else err_rest + "\n")
    error = final.get("error") or {}
    reason = f": {error.get('code')}: {error.get('message')}" if error else ""
    exit_code = final.get("exit_code")
    tail = f" (exit code {exit_code})" if exit_code is not None and status != "succeeded" else ""
    click.echo(f"run {final['id']} {status} in {_elapsed(term.started)}{reason}{tail}", err=True)


def _on_interrupt(client, run_id: str, cancel_on_interrupt: bool) -> dict | None:
    """Ctrl-C: cancel (asked on a TTY, or forced by the flag) and wait for the end; None leaves it running."""
    if cancel_on_interrupt:
        cancel = True
    elif sys.stdin.isatty():
        try:
            cancel = click.confirm(f"\nCancel run {run_id}?", default=False, err=True)
        except (click.Abort, KeyboardInterrupt, EOFError):
            cancel = False
    else:
        cancel = False
    if not cancel:
        click.echo(f"\nrun {run_id} is still running: `agentruns runs logs {run_id} -f` to follow it, "
                   f"`agentruns runs cancel {run_id}` to stop it", err=True)
        return None
    click.echo(f"\ncanceling run {run_id}...", err=True)
    try:
        run = client.agent_runs.cancel(run_id)
    except Conflict:  # it finished meanwhile
        run = client.agent_runs.get(run_id)
    if run["status"] in TERMINAL:
        return run
    try:
        return client.agent_runs.wait(run_id, timeout=30)
    except (WaitTimeout, KeyboardInterrupt):
        click.echo(f"run {run_id} was asked to cancel; it has not stopped yet", err=True)
        return None


def follow_run(client, run: dict, *, quiet: bool, cancel_on_interrupt: bool) -> dict | None:
    """Stream a run until it ends and return the final record; None if interrupted and left running."""
    term = Terminal(run["id"], quiet)
    try:
        with term:
            for event in client.agent_runs.stream(run["id"]):
                term.event(event)
        final = client.agent_runs.get(run["id"])
        if final["status"] not in TERMINAL:  # the stream ended early (e.g. its event log was compacted)
            final = client.agent_runs.wait(run["id"])
    except KeyboardInterrupt:
        final = _on_interrupt(client, run["id"], cancel_on_interrupt)
        if final is None:
            return None
    finish(term, final)
    return final
