/** The retry policy's pure parts: backoff, what may be resent, Retry-After parsing. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { parseRetryAfter } from "../../src/errors.js";
import {
  MAX_BACKOFF_MS,
  MAX_RETRY_AFTER_MS,
  backoffDelay,
  mayResendAnswer,
  mayResendFailure,
  neverSent,
} from "../../src/retry.js";
import { dropped, refused } from "../helpers/fake-fetch.js";

describe("backoffDelay", () => {
  it("doubles per attempt with equal jitter: between half the ceiling and the ceiling", () => {
    assert.equal(
      backoffDelay(0, 500, undefined, () => 0),
      250,
    );
    assert.equal(
      backoffDelay(0, 500, undefined, () => 1),
      500,
    );
    assert.equal(
      backoffDelay(2, 500, undefined, () => 0),
      1000,
    );
    assert.equal(
      backoffDelay(2, 500, undefined, () => 1),
      2000,
    );
  });

  it("is capped at MAX_BACKOFF_MS", () => {
    assert.equal(MAX_BACKOFF_MS, 8000);
    assert.equal(
      backoffDelay(10, 500, undefined, () => 1),
      8000,
    );
    assert.equal(
      backoffDelay(10, 500, undefined, () => 0),
      4000,
    );
  });

  it("follows Retry-After (capped at a minute) plus up to 100 ms of jitter", () => {
    assert.equal(
      backoffDelay(0, 500, 3000, () => 0),
      3000,
    );
    assert.equal(
      backoffDelay(5, 500, 3000, () => 1),
      3100,
    );
    assert.equal(
      backoffDelay(0, 500, 3_600_000, () => 0),
      MAX_RETRY_AFTER_MS,
    );
    assert.equal(
      backoffDelay(0, 500, 0, () => 0),
      0,
    );
  });
});

describe("what may be resent", () => {
  it("resends 429 for every call, 5xx and idempotency_key_in_use only for 'always' calls", () => {
    assert.equal(mayResendAnswer("safe", 429, "rate_limited"), true);
    assert.equal(mayResendAnswer("always", 503, "unavailable"), true);
    assert.equal(mayResendAnswer("safe", 503, "unavailable"), false);
    assert.equal(mayResendAnswer("always", 409, "idempotency_key_in_use"), true);
    assert.equal(mayResendAnswer("always", 409, "conflict"), false);
    assert.equal(mayResendAnswer("always", 422, "validation_error"), false);
    assert.equal(mayResendAnswer("always", 404, "not_found"), false);
  });

  it("resends 'safe' calls only after failures that never reached the server", () => {
    assert.equal(mayResendFailure("safe", refused()), true);
    assert.equal(mayResendFailure("safe", dropped()), false);
    assert.equal(mayResendFailure("safe", new TypeError("Failed to fetch")), false); // a browser: unknown
    assert.equal(mayResendFailure("always", dropped()), true);
  });

  it("reads a refusal through undici's happy-eyeballs AggregateError", () => {
    const refusal = (address: string) =>
      Object.assign(new Error(`connect ECONNREFUSED ${address}`), { code: "ECONNREFUSED" });
    const both = new AggregateError([refusal("::1"), refusal("127.0.0.1")]);
    assert.equal(neverSent(new TypeError("fetch failed", { cause: both })), true);
    const mixed = new AggregateError([refusal("::1"), Object.assign(new Error("reset"), { code: "ECONNRESET" })]);
    assert.equal(neverSent(new TypeError("fetch failed", { cause: mixed })), false);
  });
});

describe("parseRetryAfter", () => {
  it("reads delta-seconds and HTTP dates", () => {
    assert.equal(parseRetryAfter("2"), 2);
    assert.equal(parseRetryAfter(" 0.5 "), 0.5);
    const now = Date.parse("2026-01-01T00:00:00Z");
    assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now), 30);
    assert.equal(parseRetryAfter("Wed, 31 Dec 2025 23:00:00 GMT", now), 0); // in the past: now
  });

  it("ignores what it cannot read", () => {
    assert.equal(parseRetryAfter(undefined), undefined);
    assert.equal(parseRetryAfter(""), undefined);
    assert.equal(parseRetryAfter("soon"), undefined);
    assert.equal(parseRetryAfter("-3"), undefined);
  });
});
