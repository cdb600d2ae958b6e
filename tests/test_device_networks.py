"""The device network allow-list (AGENTRUNS_DEVICE_NETWORKS): the rule itself, the API's checks at
create, update and /test, and the driver's check at connect time on the address it connects to.

The session's settings opt loopback in (the test sshd is on 127.0.0.1); the tests here that need the
default rule build an app or a worker context without it.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import replace

import pytest

from core.config import Settings
from core.device_networks import EVERYWHERE, LOOPBACK, SETTING, DeviceNetworks, parse, policy, service_hosts
from drivers.base import DEVICE_ADDRESS_REFUSED, DriverError

REFUSED_BY_DEFAULT = [
    "127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1",  # loopback, also IPv4-mapped
    "169.254.169.254", "::ffff:169.254.169.254", "169.254.1.1", "fe80::1", "fe80::1%lo",  # link-local
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "0.0.0.0", "::",  # unspecified: connecting to it reaches this host
]
ALLOWED_BY_DEFAULT = ["10.0.0.1", "172.16.5.4", "192.168.1.20", "100.64.0.1", "8.8.8.8", "203.0.113.5",
                      "fd00::1", "2001:db8::1", "::ffff:10.1.2.3"]


@pytest.fixture()
def names(monkeypatch):
    """A resolver table: names mapped to their addresses ([] does not resolve); other names resolve for real."""
    real = socket.getaddrinfo
    table: dict[str, list[str]] = {}

    def fake(host, port=None, *args, **kwargs):
        if host not in table:
            return real(host, port, *args, **kwargs)
        if not table[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port or 0, 0, 0)) if ":" in a else
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return table


# --- the rule ---------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("address", REFUSED_BY_DEFAULT)
def test_the_default_refuses_loopback_link_local_multicast_and_unspecified(address):
    reason = DeviceNetworks().refusal(address)
    assert reason and reason.startswith(f"{address} is "), reason
    if address not in ("0.0.0.0", "::"):
        assert SETTING in reason  # the message says how the operator allows it


@pytest.mark.unit
@pytest.mark.parametrize("address", ALLOWED_BY_DEFAULT)
def test_the_default_allows_other_addresses(address):
    assert DeviceNetworks().refusal(address) is None


@pytest.mark.unit
def test_the_default_refuses_the_services_own_database_and_redis_hosts(names, monkeypatch):
    names["db.internal"] = ["10.20.30.40"]
    names["redis.internal"] = ["10.20.30.41", "fd00::41"]
    calls: list[str] = []
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: calls.append(host) or resolve(host, *a, **k))
    rule = DeviceNetworks("", service_hosts("postgresql+psycopg://u:pw@db.internal:5432/agentruns",
                                            "redis://:pw@redis.internal:6379/0"))
    assert calls == []  # nothing is resolved before the first check
    for address in ("10.20.30.40", "10.20.30.41", "fd00::41", "::ffff:10.20.30.40"):
        reason = rule.refusal(address)
        assert reason and "database or Redis host" in reason and SETTING in reason, reason
    assert rule.refusal("10.20.30.42") is None
    assert sorted(calls) == ["db.internal", "redis.internal"]  # resolved once, on first use


@pytest.mark.unit
def test_a_service_host_that_does_not_resolve_is_tried_again(names):
    names["db.internal"] = []
    rule = DeviceNetworks("", ["db.internal"])
    assert rule.refusal("10.20.30.40") is None
    names["db.internal"] = ["10.20.30.40"]
    assert rule.refusal("10.20.30.40") is not None


@pytest.mark.unit
def test_service_hosts_come_from_the_urls():
    assert service_hosts("postgresql+psycopg://postgres@127.0.0.1:5432/agentruns", "redis://10.0.0.7:6379/0",
                         "rediss://:secret@[fd00::7]:6380/1") == ("127.0.0.1", "10.0.0.7", "fd00::7")
    # libpq's host in the query (several, or a socket directory that is no network host); a unix socket
    assert service_hosts("postgresql://u@/db?host=/var/run/postgresql", "postgresql://u@/db?host=pg1,pg2",
                         "unix:///tmp/redis.sock") == ("pg1", "pg2")


@pytest.mark.unit
def test_a_list_allows_exactly_its_networks():
    rule = DeviceNetworks("10.0.0.0/8, 192.168.1.0/24,fd00::/8", ["10.0.0.5"])
    for address in ("10.1.2.3", "192.168.1.9", "fd00::1", "::ffff:10.9.9.9"):
        assert rule.refusal(address) is None, address
    for address in ("192.168.2.1", "8.8.8.8", "127.0.0.1", "169.254.169.254", "fe80::1", "::1", "2001:db8::1"):
        reason = rule.refusal(address)
        assert reason and "outside the networks" in reason and SETTING in reason, (address, reason)
    # The operator's list is the whole rule: a listed network holding the database host wins.
    assert rule.refusal("10.0.0.5") is None


@pytest.mark.unit
def test_the_tests_loopback_opt_in():
    rule = DeviceNetworks(LOOPBACK, ["127.0.0.1"])  # the test PostgreSQL and Redis are on loopback too
    for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert rule.refusal(address) is None, address
    for address in ("169.254.169.254", "10.0.0.1", "224.0.0.1", "0.0.0.0"):
        assert rule.refusal(address) is not None, address


@pytest.mark.unit
def test_link_local_is_allowed_only_by_a_network_that_holds_it():
    assert DeviceNetworks("10.0.0.0/8").refusal("169.254.169.254") is not None
    assert DeviceNetworks("169.254.0.0/16").refusal("169.254.169.254") is None
    everywhere = DeviceNetworks(EVERYWHERE)
    assert everywhere.refusal("169.254.169.254") is None and everywhere.refusal("::1") is None
    assert everywhere.refusal("0.0.0.0") is not None and everywhere.refusal("::") is not None  # never


@pytest.mark.unit
@pytest.mark.parametrize("text", ["10.0.0.0/33", "nonsense", "10.0.0.0/8;192.168.0.0/16", "fe80::/129"])
def test_an_invalid_list_fails_at_startup(text, monkeypatch):
    with pytest.raises(ValueError, match=SETTING) as info:
        Settings(device_networks=text)
    assert "CIDR" in str(info.value)
    monkeypatch.setenv(SETTING, text)
    with pytest.raises(ValueError, match=SETTING):
        Settings.from_env()


@pytest.mark.unit
def test_parse_is_forgiving_about_form():
    assert [str(n) for n in parse(" 10.0.0.1/8 , ,192.168.1.7,::1 ")] == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    assert parse("") == () and parse(" , ") == ()


@pytest.mark.unit
def test_check_host_judges_every_address_a_name_resolves_to(names):
    rule = DeviceNetworks()
    names.update({"ok.example.test": ["203.0.113.5", "2001:db8::5"], "half.example.test": ["203.0.113.5", "127.0.0.1"],
                  "meta.example.test": ["169.254.169.254"], "gone.example.test": []})
    assert rule.check_host("ok.example.test") is None
    assert rule.check_host("half.example.test") == (
        "half.example.test resolves to 127.0.0.1, a loopback address, which devices may not use unless the "
        f"operator allows its network in {SETTING}")
    assert "169.254.169.254" in (rule.check_host("meta.example.test") or "")
    assert rule.check_host("gone.example.test") is None  # accepted now, checked when connecting
    assert (rule.check_host("127.0.0.1") or "").startswith("127.0.0.1 is a loopback address")
    assert "localhost resolves to 127.0.0.1" in (rule.check_host("localhost") or "")


@pytest.mark.unit
def test_one_rule_per_configuration():
    base = Settings(secret_key="k")
    assert policy(base) is policy(replace(base, lease_seconds=99))
    assert policy(base) is not policy(replace(base, device_networks=LOOPBACK))
    assert policy(base).refusal == policy(replace(base, lease_seconds=99)).refusal  # one ssh pool key


@pytest.mark.unit
def test_a_refused_address_is_not_a_blip_the_worker_retries():
    from workers.device_backoff import retryable

    assert not retryable(DriverError(DEVICE_ADDRESS_REFUSED, "refused", before_start=True))


# --- the API ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_app(settings):
    """The API as an operator runs it by default: no AGENTRUNS_DEVICE_NETWORKS, so no loopback."""
    from app import create_app

    return create_app(replace(settings, device_networks=""))


@pytest.fixture()
def strict(strict_app):
    return strict_app.test_client()


def _ssh_body(sshd, device_id: str, host: str | None = None) -> dict:
    return {"id": device_id, "kind": "computer", "driver": "ssh", "host": host or sshd.host, "port": sshd.port,
            "username": sshd.username, "private_key": sshd.private_key, "host_key": sshd.host_key}


def _refused(resp) -> str:
    assert resp.status_code == 422, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "device_address_refused", error
    [message] = error["details"]["fields"]["host"]
    assert SETTING in message, message
    return message


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "localhost", "::ffff:127.0.0.1", "fe80::1",
                                  "224.0.0.1", "metadata.example.test"])
def test_create_refuses_internal_addresses_without_the_opt_in(strict, auth, sshd, names, host):
    names["metadata.example.test"] = ["169.254.169.254"]
    message = _refused(strict.post("/api/v1/devices", json=_ssh_body(sshd, "inner", host), headers=auth))
    assert host in message
    assert strict.get("/api/v1/devices/inner", headers=auth).status_code == 404


def test_create_accepts_other_and_unresolvable_hosts(strict, auth, sshd, names):
    names.update({"box.example.test": ["203.0.113.5"], "later.example.test": []})
    for i, host in enumerate(["203.0.113.5", "box.example.test", "later.example.test"]):
        resp = strict.post("/api/v1/devices", json=_ssh_body(sshd, f"outer-{i}", host), headers=auth)
        assert resp.status_code == 201, resp.get_json()
    # `local` devices have no address: the allow-list does not concern them.
    local = strict.post("/api/v1/devices", json={"id": "loc", "kind": "sandbox", "driver": "local"}, headers=auth)
    assert local.status_code == 201, local.get_json()


def test_update_refuses_a_new_internal_host(strict, client, auth, sshd, names):
    names["box.example.test"] = ["203.0.113.5"]
    assert strict.post("/api/v1/devices", json=_ssh_body(sshd, "box", "box.example.test"),
                       headers=auth).status_code == 201
    for host in ("127.0.0.1", "localhost", "169.254.169.254"):
        _refused(strict.patch("/api/v1/devices/box", json={"host": host}, headers=auth))
    assert strict.get("/api/v1/devices/box", headers=auth).get_json()["data"]["host"] == "box.example.test"
    # A change that leaves the address alone is not checked again (the name may point elsewhere now).
    names["box.example.test"] = ["127.0.0.1"]
    assert strict.patch("/api/v1/devices/box", json={"name": "renamed"}, headers=auth).status_code == 200
    _refused(strict.patch("/api/v1/devices/box", json={"host": "box.example.test"}, headers=auth))
    # The opt-in (the session's app) allows loopback.
    assert client.patch("/api/v1/devices/box", json={"host": "127.0.0.1"}, headers=auth).status_code == 200


def test_test_endpoint_obeys_the_allow_list(strict, client, auth, sshd):
    assert client.post("/api/v1/devices", json=_ssh_body(sshd, "loop"), headers=auth).status_code == 201
    allowed = client.post("/api/v1/devices/loop/test", headers=auth).get_json()["data"]
    assert allowed["ok"] is True, allowed
    # The same device through an API without the opt-in: refused before connecting (not through the
    # connection the opt-in API left in the pool).
    refused = strict.post("/api/v1/devices/loop/test", headers=auth).get_json()["data"]
    assert refused["ok"] is False and refused["error"]["code"] == DEVICE_ADDRESS_REFUSED, refused
    assert "127.0.0.1" in refused["error"]["message"] and SETTING in refused["error"]["message"]


# --- connect time -----------------------------------------------------------------------------------

def test_a_name_that_resolves_to_loopback_later_is_refused_when_connecting(strict, auth, sshd, settings, names):
    """DNS rebinding: allowed at create, refused at connect; and the connection goes to the address
    that was checked (the same spec with the opt-in reaches the sshd through the faked name)."""
    from core import db
    from core.models import Device
    from core.services import device_config
    from drivers import get_driver

    names["rebind.example.test"] = ["203.0.113.5"]
    assert strict.post("/api/v1/devices", json=_ssh_body(sshd, "rebind", "rebind.example.test"),
                       headers=auth).status_code == 201
    names["rebind.example.test"] = ["127.0.0.1"]
    with db.session() as s:
        device = s.query(Device).filter_by(id="rebind").one()
    strict_settings = replace(settings, device_networks="")
    cfg = device_config.load(device, settings.secret_key, networks=policy(strict_settings))
    started = time.monotonic()
    with pytest.raises(DriverError) as info:
        get_driver(cfg.spec).ping()
    assert time.monotonic() - started < 0.2  # not retried like an unreachable device
    err = info.value
    assert err.code == DEVICE_ADDRESS_REFUSED and err.before_start, err.message
    assert err.message.startswith(f"refusing to connect to rebind.example.test:{sshd.port}: 127.0.0.1 is a loopback")
    allowed = device_config.load(device, settings.secret_key, networks=policy(settings))
    assert get_driver(allowed.spec).ping() > 0


def test_the_driver_refuses_a_name_if_any_of_its_addresses_is_refused(sshd, names):
    from drivers.ssh import SSHDriver

    names["mixed.example.test"] = ["127.0.0.1", "203.0.113.5"]
    rule = DeviceNetworks()
    with pytest.raises(DriverError) as info:
        SSHDriver(sshd.spec(host="mixed.example.test", address_check=rule.refusal)).ping()
    assert info.value.code == DEVICE_ADDRESS_REFUSED
    names["v6.example.test"] = ["::ffff:127.0.0.1"]
    with pytest.raises(DriverError) as info:
        SSHDriver(sshd.spec(host="v6.example.test", address_check=rule.refusal)).ping()
    assert info.value.code == DEVICE_ADDRESS_REFUSED and "::ffff:127.0.0.1" in info.value.message
    # Without a check (a spec built by hand) nothing changes: the first address that answers.
    names["mixed.example.test"] = ["127.0.0.1"]
    assert SSHDriver(sshd.spec(host="mixed.example.test")).ping() > 0


def test_a_worker_without_the_opt_in_fails_the_run_untouched(quiet_client, auth, sshd, settings, monkeypatch):
    """The run fails device_address_refused at once: not started, not put back for a retry."""
    import redis

    from core import db
    from core.models import Run
    from workers import context, runner
    from workers.device_backoff import DeviceBackoff
    from workers.device_cache import DeviceCache
    from workers.leases import Leases
    from workers.supervisor import Supervisor

    assert quiet_client.post("/api/v1/devices", json=_ssh_body(sshd, "loop-run"), headers=auth).status_code == 201
    strict_settings = replace(settings, device_networks="")
    r = redis.Redis.from_url(settings.redis_url)
    ctx = context.WorkerContext(strict_settings, r, Leases(r), f"test:{os.getpid()}",
                                DeviceCache(settings.secret_key, policy(strict_settings)))
    ctx.supervisor = Supervisor(ctx)
    ctx.backoff = DeviceBackoff(r, settings.device_retry_seconds, lambda: None)
    monkeypatch.setattr(context, "_ctx", ctx)
    resp = quiet_client.post("/api/v1/agent-runs", headers=auth, json={
        "prompt": "p", "computer_id": "loop-run", "provider": "custom", "command": "true"})
    assert resp.status_code == 201, resp.get_json()
    run = resp.get_json()["data"]
    with db.session() as s:
        tenant = str(s.get(Run, uuid.UUID(run["id"])).tenant_id)
    assert runner.execute(run["id"], tenant, "loop-run") == "executed:1"
    done = quiet_client.get(f"/api/v1/agent-runs/{run['id']}", headers=auth).get_json()["data"]
    assert done["status"] == "failed" and done["error"]["code"] == DEVICE_ADDRESS_REFUSED, done
    assert done["started_at"] is None and SETTING in done["error"]["message"]


@pytest.mark.parametrize("address", [
    "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "64:ff9b::7f00:1",  # NAT64 of 169.254.169.254, 127.0.0.1
    "2002:a9fe:a9fe::1", "2002:7f00:1::1",  # 6to4
    "::127.0.0.1", "::169.254.169.254",  # IPv4-compatible
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, whose client is 169.254.169.254
])
def test_ipv6_forms_of_a_refused_ipv4_address_are_refused(address):
    assert DeviceNetworks("", ()).refusal(address) is not None


def test_an_ipv6_form_of_the_services_own_host_is_refused(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 0))])
    rule = DeviceNetworks("", ("db.internal",))
    assert rule.refusal("64:ff9b::a01:203") is not None and rule.refusal("64:ff9b::808:808") is None
