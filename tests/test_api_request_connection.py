"""The key check's pooled connection (app.request_db) stays checked out only for the views that use it."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("path, kept", [("/api/v1/agent-runs", True), ("/api/v1/devices", False),
                                        ("/api/v1/webhooks", False)])
def test_the_key_checks_connection_is_kept_only_by_views_that_use_it(app, auth, path, kept):
    from flask import g

    from app import request_db

    with app.test_request_context(path, headers=auth):
        app.preprocess_request()  # the guard: content type, then the key
        assert g.get("tenant_id") is not None
        assert (g.get(request_db._KEY) is not None) == kept
        request_db.release()
