"""The task stream's filters: URL query parameters <-> the arguments of core.services.runs.list_runs.

Everything lives in the URL so that a filtered view can be bookmarked and shared:
`status`, `provider`, `target`, `meta` (KEY=VALUE, repeatable), `within` (1h, 24h, 7d, 30d),
`from` / `to` (UTC, as a datetime-local input sends them), `cursor`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app.api.schemas import RunListQuery, unstorable

PAGE_SIZE = 50
WITHIN = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
_QUERY = RunListQuery()


@dataclass
class Filters:
    """What the filter form shows, what list_runs gets, and what was wrong with the input."""

    form: dict[str, str] = field(default_factory=dict)
    meta: list[str] = field(default_factory=list)
    query: dict = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.meta or any(v for k, v in self.form.items() if k != "cursor"))


def _utc(value: str, name: str, errors: list[str]) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors.append(f"{name}: not a date and time")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def parse(args: MultiDict, *, with_cursor: bool = True) -> Filters:
    """Read the filters from the URL; bad values are reported and left out, never a server error."""
    f = Filters()
    for name in ("status", "provider", "target", "within", "from", "to", "cursor"):
        value = args.get(name, "").strip()
        if value:
            f.form[name] = value
    raw: dict[str, object] = {k: f.form[k] for k in ("status", "provider") if k in f.form}
    if "target" in f.form:
        raw["target_id"] = f.form["target"]
    if with_cursor and "cursor" in f.form:
        raw["cursor"] = f.form["cursor"]
    after = []
    if "within" in f.form:
        if f.form["within"] in WITHIN:
            after.append(datetime.now(UTC) - WITHIN[f.form["within"]])
        else:
            f.errors.append("within: one of " + ", ".join(WITHIN))
    if "from" in f.form and (start := _utc(f.form["from"], "from", f.errors)):
        after.append(start)
    if after:
        raw["created_after"] = max(after).isoformat()
    if "to" in f.form and (end := _utc(f.form["to"], "to", f.errors)):
        raw["created_before"] = end.isoformat()
    raw["limit"] = PAGE_SIZE
    _metadata(f, args.getlist("meta"))
    try:
        f.query = _QUERY.load(raw)
    except ValidationError as exc:
        f.errors.extend(f"{name}: {', '.join(msgs)}" for name, msgs in exc.messages.items())  # type: ignore[union-attr]
        f.query = _QUERY.load({"limit": PAGE_SIZE})
        f.metadata = {}
    return f


def _metadata(f: Filters, pairs: list[str]) -> None:
    for pair in pairs:
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        problem = unstorable(pair)
        if not sep or not key or problem:
            f.errors.append(f"metadata {pair!r}: {problem or 'write it as KEY=VALUE'}")
            continue
        f.meta.append(f"{key}={value}")
        f.metadata[key] = value


def to_args(f: Filters, **changes: str | None) -> list[tuple[str, str]]:
    """The filters as URL query pairs, with some changed (None removes one): links keep the view."""
    pairs = {k: v for k, v in f.form.items()}
    for name, value in changes.items():
        if value is None:
            pairs.pop(name, None)
        else:
            pairs[name] = value
    return list(pairs.items()) + [("meta", m) for m in f.meta]
