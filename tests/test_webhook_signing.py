"""agentruns.webhooks: the Agentruns-Signature scheme, and the shared vectors every SDK must reproduce.

clients/webhook-signature-vectors.json was written once with Python's hmac module alone (not with this
module), so the vector tests here check the implementation against an independent computation; the
TypeScript and Go SDKs run the same file (clients/typescript/test/unit/webhooks.test.ts,
clients/go/webhooks_test.go).
"""
from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agentruns import webhooks
from agentruns.webhooks import WebhookVerificationError, generate_secret, sign, verify

pytestmark = pytest.mark.unit

VECTORS_FILE = Path(__file__).resolve().parent.parent / "clients" / "webhook-signature-vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))

NOW = 1_700_000_000
SECRET = "whsec_" + "a" * 43
EVENT = {"id": "evt_1", "type": "run.succeeded", "created_at": "2023-11-14T22:13:20Z",
         "data": {"id": "run-1", "status": "succeeded", "output": "hi"}}
BODY = json.dumps(EVENT).encode()


def code_of(body: bytes | str, header: str | None, secret: str = SECRET, tolerance: int = 300,
            now: float = NOW) -> str:
    """The error code verify raises, or "ok"."""
    try:
        verify(body, header, secret, tolerance, now=now)
    except WebhookVerificationError as error:
        assert str(error), "every error has a message"
        return error.code
    return "ok"


# --- sign and verify ----------------------------------------------------------------------------------
def test_a_signed_event_verifies_and_comes_back_decoded():
    header = sign(BODY, SECRET, NOW)
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)
    assert verify(BODY, header, SECRET, now=NOW) == EVENT


def test_the_clock_is_the_default_now():
    assert verify(BODY, sign(BODY, SECRET, int(time.time())), SECRET) == EVENT
    with pytest.raises(WebhookVerificationError) as caught:
        verify(BODY, sign(BODY, SECRET, int(time.time()) - 3600), SECRET)
    assert caught.value.code == "timestamp_outside_tolerance"


def test_generated_secrets_are_whsec_and_43_url_safe_characters():
    made = {generate_secret() for _ in range(20)}
    assert len(made) == 20
    assert all(re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", s) for s in made)
    assert code_of(BODY, sign(BODY, made.pop(), NOW), secret=made.pop()) == "signature_mismatch"


def test_a_rotation_signs_with_each_secret_in_order_and_either_verifies():
    new, old = generate_secret(), generate_secret()
    header = sign(BODY, [new, old], NOW)
    t, first, second = header.split(",")
    assert (t, first, second) == tuple(sign(BODY, new, NOW).split(",")) + (sign(BODY, old, NOW).split(",")[1],)
    assert verify(BODY, header, new, now=NOW) == verify(BODY, header, old, now=NOW) == EVENT
    assert code_of(BODY, header, secret=generate_secret()) == "signature_mismatch"


def test_a_tampered_body_or_a_wrong_secret_is_a_signature_mismatch():
    header = sign(BODY, SECRET, NOW)
    assert code_of(BODY.replace(b"succeeded", b"failed"), header) == "signature_mismatch"
    assert code_of(BODY + b" ", header) == "signature_mismatch"
    assert code_of(BODY, header, secret=SECRET + "x") == "signature_mismatch"
    assert code_of(BODY, header.replace("t=1700000000", "t=1700000001")) == "signature_mismatch"


@pytest.mark.parametrize(("signed_at", "tolerance", "expect"), [
    (NOW - 300, 300, "ok"),
    (NOW + 300, 300, "ok"),
    (NOW - 301, 300, "timestamp_outside_tolerance"),
    (NOW + 301, 300, "timestamp_outside_tolerance"),
    (NOW - 86_400, 300, "timestamp_outside_tolerance"),
    (NOW - 600, 900, "ok"),
    (NOW - 61, 60, "timestamp_outside_tolerance"),
])
def test_old_and_future_timestamps(signed_at, tolerance, expect):
    assert code_of(BODY, sign(BODY, SECRET, signed_at), tolerance=tolerance) == expect


def test_a_fraction_of_a_second_past_the_tolerance_is_outside_it():
    header = sign(BODY, SECRET, NOW)
    assert code_of(BODY, header, now=NOW + 300.0) == "ok"
    assert code_of(BODY, header, now=NOW + 300.5) == "timestamp_outside_tolerance"


GOOD = sign(BODY, SECRET, NOW).split("v1=")[1]


@pytest.mark.parametrize("header", [
    None, "", "   ", "\t",
    f"v1={GOOD}",                        # no timestamp
    f"t=now,v1={GOOD}", f"t=1700000000.0,v1={GOOD}", f"t=-1700000000,v1={GOOD}", f"t=+1700000000,v1={GOOD}",
    f"t=,v1={GOOD}", f"t=1_700_000_000,v1={GOOD}", f"t=１７００００００００,v1={GOOD}",  # fullwidth digits
    f"t={NOW},t={NOW},v1={GOOD}",        # two timestamps: which was signed?
    f"t={NOW}", f"t={NOW},v0={GOOD}", f"t={NOW},V1={GOOD}",  # no v1 (names are case-sensitive)
    f"sha256={GOOD}", GOOD,
])
def test_malformed_headers(header):
    assert code_of(BODY, header) == "malformed_header"


def test_the_header_is_checked_before_the_timestamp_and_the_timestamp_before_the_signature():
    assert code_of(BODY, f"t={NOW - 3600}") == "malformed_header"
    assert code_of(BODY, sign(BODY, "whsec_other", NOW - 3600)) == "timestamp_outside_tolerance"
    assert code_of(b"not json", sign(b"not json", "whsec_other", NOW)) == "signature_mismatch"


def test_unknown_schemes_stray_items_and_whitespace_are_tolerated():
    assert code_of(BODY, f"t={NOW},v0=deadbeef,v1={GOOD},v2=x") == "ok"
    assert code_of(BODY, f" t={NOW} ,\tv1 = {GOOD}\t,, junk ") == "ok"


@pytest.mark.parametrize("candidate", [GOOD.upper(), GOOD[:-1], GOOD + "0", "", "é" * 64, "\x00" * 64])
def test_near_misses_are_signature_mismatches(candidate):
    assert code_of(BODY, f"t={NOW},v1={candidate}") == "signature_mismatch"


def test_a_str_body_is_its_utf8_bytes():
    event = {**EVENT, "data": {"output": "Grüße, 世界 🚀"}}
    text = json.dumps(event, ensure_ascii=False)
    raw = text.encode()
    assert sign(text, SECRET, NOW) == sign(raw, SECRET, NOW)
    assert verify(text, sign(raw, SECRET, NOW), SECRET, now=NOW) == event
    assert verify(raw, sign(text, SECRET, NOW), SECRET, now=NOW) == event
    assert verify(bytearray(raw), sign(raw, SECRET, NOW), SECRET, now=NOW) == event
    assert code_of(text.encode("latin-1", "replace"), sign(raw, SECRET, NOW)) == "signature_mismatch"


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b"null", b'"evt_1"', b'{"id": "evt_1"}', b'{"id": 1, "type": "run.succeeded"}',
    b'{"id": "evt_1", "type": "run.succeeded", "data": {"cost": NaN}}', b'{"id": "evt_1", "type": "x", "n": Infinity}',
    b"\xef\xbb\xbf" + BODY,             # a UTF-8 byte order mark
    BODY.decode().encode("utf-16"),     # json.loads(bytes) alone would take UTF-16
    b'{"id": "evt_1", "type": "\xff"}',  # not UTF-8
])
def test_a_signed_body_that_is_not_an_event_is_malformed_body(body):
    with pytest.raises(WebhookVerificationError) as caught:
        verify(body, sign(body, SECRET, NOW), SECRET, now=NOW)
    assert caught.value.code == "malformed_body"
    assert isinstance(caught.value, ValueError)


def test_missing_secrets_are_programming_errors_not_bad_requests():
    for call in (lambda: verify(BODY, sign(BODY, SECRET, NOW), "", now=NOW), lambda: sign(BODY, [], NOW),
                 lambda: sign(BODY, "", NOW), lambda: sign(BODY, SECRET, -1), lambda: sign(BODY, SECRET, 1.5)):
        with pytest.raises(ValueError) as caught:
            call()
        assert not isinstance(caught.value, WebhookVerificationError)


def test_an_absurdly_long_timestamp_is_outside_the_tolerance_not_a_crash():
    digits = "9" * 5000  # int() refuses over 4300 digits
    assert code_of(BODY, f"t={digits},v1={GOOD}") == "timestamp_outside_tolerance"
    assert code_of(BODY, f"t={'0' * 5000}{NOW},v1={GOOD}") == "signature_mismatch"  # leading zeros: fine, but signed


# --- the shared vectors -------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_shared_vector(vector):
    assert code_of(vector["body"], vector["header"], vector["secret"], vector["tolerance"], vector["now"]) == \
        vector["expect"]
    if vector["expect"] == "ok":
        assert verify(vector["body"], vector["header"], vector["secret"], vector["tolerance"],
                      now=vector["now"]) == json.loads(vector["body"])


def test_sign_reproduces_the_vectors_it_could_have_written():
    canonical = [v for v in VECTORS if v["expect"] == "ok" and re.fullmatch(r"t=[1-9]\d*,v1=[0-9a-f]{64}", v["header"])]
    assert len(canonical) >= 4
    for v in canonical:
        assert sign(v["body"], v["secret"], int(v["header"][2:].split(",")[0])) == v["header"], v["name"]


def test_the_vectors_cover_every_outcome_and_the_required_cases():
    assert {v["expect"] for v in VECTORS} == {"ok", "malformed_header", "timestamp_outside_tolerance",
                                              "signature_mismatch", "malformed_body"}
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    for name in ("valid", "rotation_second_v1_matches", "tampered_body", "wrong_secret", "timestamp_too_old",
                 "timestamp_too_far_in_future", "valid_non_ascii_utf8_body", "header_empty", "header_no_v1",
                 "header_missing_timestamp", "header_timestamp_not_integer"):
        assert name in names
    assert any(not v["body"].isascii() for v in VECTORS if v["expect"] == "ok")
    assert all(set(v) == {"name", "secret", "body", "header", "now", "tolerance", "expect"} for v in VECTORS)


# --- the module docstring's Flask receiver ------------------------------------------------------------
def test_the_docstring_flask_receiver_works(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = webhooks.__doc__ or ""
    example = _indented_block_after(doc, "A receiver in Flask:")
    handled: list[dict[str, Any]] = []
    monkeypatch.setenv("AGENTRUNS_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": "receiver", "handle": handled.append}
    exec(compile(example, "agentruns/webhooks.py docstring", "exec"), namespace)
    client = namespace["app"].test_client()

    now = int(time.time())
    ok = client.post("/agentruns/events", data=BODY, headers={webhooks.SIGNATURE_HEADER: sign(BODY, SECRET, now),
                                                              webhooks.EVENT_ID_HEADER: "evt_1"})
    assert ok.status_code == 204 and handled == [EVENT]
    bad = client.post("/agentruns/events", data=BODY, headers={webhooks.SIGNATURE_HEADER: sign(BODY, "whsec_x", now)})
    missing = client.post("/agentruns/events", data=BODY)
    assert (bad.status_code, bad.get_json()) == (400, {"error": "signature_mismatch"})
    assert (missing.status_code, missing.get_json()) == (400, {"error": "malformed_header"})
    assert handled == [EVENT]


def _indented_block_after(doc: str, marker: str) -> str:
    """The indented code block that follows `marker` in a docstring, dedented."""
    lines = doc.split(marker, 1)[1].splitlines()[1:]
    block: list[str] = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"
