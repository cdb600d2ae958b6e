"""Keyset cursors for lists ordered newest first by (created_at, id): opaque to callers."""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from core.errors import Invalid


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """A keyset cursor (newest first, by created_at then id): opaque to callers."""
    raw = json.dumps([created_at.isoformat(), str(row_id)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, rid = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(rid)
    except (ValueError, TypeError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        raise Invalid.field("cursor", "not a cursor this API returned") from None
