"""An app built on default settings, for what needs no database (the OpenAPI document)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def offline_client() -> Iterator:
    """A test client of an app on default settings, which connects to nothing. create_app points the
    process-wide engine (core.db) at its database URL: the one the other tests use is put back."""
    from app import create_app
    from core import db
    from core.config import Settings
    from core.crypto import new_secret_key

    kept = db._engine, db._factory
    try:
        yield create_app(Settings(secret_key=new_secret_key())).test_client()
    finally:
        db._engine, db._factory = kept
