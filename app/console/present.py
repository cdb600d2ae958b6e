"""How runs and devices read on the console's pages: rows, durations, commands to copy, fingerprints."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
from datetime import UTC, datetime

from core.models import Run

TITLE_CHARS = 160


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, as the API writes it; the pages show it in the viewer's time zone."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def first_line(prompt: str) -> str:
    """The prompt's first non-blank line, shortened for a row."""
    line = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "")
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def duration(seconds: float | None) -> str:
    """1.2 s, 4 m 05 s, 2 h 03 m; an em dash when unknown (the same rules as console.js)."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def row(run: Run, started_at: datetime | None, request_id: str | None) -> dict:
    """One row of the task stream, as the page renders it and the live feed sends it."""
    return {"id": str(run.id), "status": run.status, "provider": run.provider, "target_kind": run.target_kind,
            "target_id": run.target_id, "title": first_line(run.prompt), "created_at": iso(run.created_at),
            "started_at": iso(started_at), "finished_at": iso(run.finished_at), "request_id": request_id,
            "duration": duration(seconds_between(started_at, run.finished_at))}


def create_body(run: Run) -> dict:
    """The POST body that would create this run again (without its secret env)."""
    body: dict = {"prompt": run.prompt, "target_id": run.target_id, "target_kind": run.target_kind,
                  "provider": run.provider}
    for name in ("command", "model"):
        if getattr(run, name):
            body[name] = getattr(run, name)
    body.update(cwd=run.cwd, timeout=run.timeout)
    if run.metadata_:
        body["metadata"] = run.metadata_
    return body


def curl_command(run: Run, base_url: str) -> str:
    """An equivalent `curl` call (the key comes from the environment, never from the page)."""
    body = json.dumps(create_body(run), ensure_ascii=False)
    url = shlex.quote(base_url.rstrip("/") + "/api/v1/agent-runs")
    return (f"curl -sS -X POST {url} \\\n  -H \"Authorization: Bearer $AGENTRUNS_API_KEY\" \\\n"
            f"  -H \"Idempotency-Key: $(uuidgen)\" -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)}")


def cli_command(run: Run) -> str:
    """The equivalent `agentruns sandbox|computer prompt ...` command."""
    parts = ["agentruns", run.target_kind, "prompt", run.target_id, "--provider", run.provider]
    if run.command:
        parts += ["--runtime-command", run.command]
    if run.model:
        parts += ["--model", run.model]
    parts += ["--cwd", run.cwd, "--timeout", str(run.timeout)]
    for key, value in (run.metadata_ or {}).items():
        parts += ["-m", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return " ".join(shlex.quote(p) for p in parts) + " -- " + shlex.quote(run.prompt)


def pretty_json(value) -> str:
    """Indented JSON for a <pre>, or an em dash for nothing."""
    if value is None or value == {}:
        return "—"
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def host_key_fingerprint(host_key: str | None) -> str | None:
    """OpenSSH's SHA256:... fingerprint of the first key in a known_hosts-style text, or None."""
    for line in (host_key or "").splitlines():
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word.startswith(("ssh-", "ecdsa-", "sk-")):
                try:
                    blob = base64.b64decode(words[i + 1], validate=True)
                except (binascii.Error, ValueError):
                    continue
                digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
                return f"{word} SHA256:{digest}"
    return None
