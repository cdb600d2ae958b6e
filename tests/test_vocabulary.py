"""One vocabulary: statuses, event types and providers are defined in agentruns.vocabulary, and every
other place that lists them (the provider registry, the API's schemas, the tables' CHECK constraints,
the migration that made them) agrees with it."""
from __future__ import annotations

import importlib
import re

import pytest

from agentruns import vocabulary

pytestmark = pytest.mark.unit


def _check_values(sql: str) -> set[str]:
    return set(re.findall(r"'([^']*)'", sql))


def test_statuses_and_terminal():
    assert vocabulary.STATUSES == ("queued", "running", "succeeded", "failed", "canceled")
    assert vocabulary.TERMINAL == {"succeeded", "failed", "canceled"}
    assert vocabulary.LIVE | vocabulary.TERMINAL == set(vocabulary.STATUSES)
    # Plain strings, not enum members: they go into SQL parameters and JSON as they are.
    assert all(type(s) is str for s in (*vocabulary.STATUSES, *vocabulary.TERMINAL))


def test_the_provider_registry_is_keyed_by_the_api_names():
    from providers import PROVIDERS

    assert set(PROVIDERS) == set(vocabulary.PROVIDERS)
    assert vocabulary.DEFAULT_PROVIDER in vocabulary.PROVIDERS


def test_the_api_schemas_offer_exactly_the_vocabulary():
    from app.api.schemas import RunCreate, RunListQuery

    create, query = RunCreate(), RunListQuery()
    assert set(create.fields["provider"].validate.choices) == set(vocabulary.PROVIDERS)
    assert set(create.fields["target_kind"].validate.choices) == set(vocabulary.KINDS)
    assert set(query.fields["status"].validate.choices) == set(vocabulary.STATUSES)
    assert create.fields["provider"].load_default == vocabulary.DEFAULT_PROVIDER


def test_the_tables_check_constraints_list_the_vocabulary():
    from core.models import Run, RunEvent

    checks = {c.name: str(c.sqltext) for t in (Run.__table__, RunEvent.__table__) for c in t.constraints
              if c.name and c.name.startswith("ck_")}
    assert _check_values(checks["ck_runs_status"]) == set(vocabulary.STATUSES)
    assert _check_values(checks["ck_run_events_type"]) == set(vocabulary.EVENT_TYPES)


def test_the_migration_created_the_same_constraints():
    migration = importlib.import_module("migrations.versions.0003_vocabulary_checks")
    assert set(migration.STATUSES) == set(vocabulary.STATUSES)
    assert set(migration.EVENT_TYPES) == set(vocabulary.EVENT_TYPES)
