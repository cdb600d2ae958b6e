/** What goes on the wire: headers, one X-Request-Id per logical request, Idempotency-Key reuse, the
 * retry policy as the client applies it (which calls, how often, how long apart), timeouts, aborts. */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import { Agentruns, ConnectionError, ServerError, VERSION } from "../../src/index.js";
import {
  FakeFetch,
  clientOn,
  dropped,
  errorResponse,
  jsonResponse,
  refused,
  runResponse,
} from "../helpers/fake-fetch.js";

const unavailable = () => errorResponse(503, "unavailable", "database down");
const created = () => runResponse("r1", "queued", {}, 201);

describe("headers", () => {
  it("sends the key, JSON, a User-Agent and the body", async () => {
    const fake = new FakeFetch(created());
    await clientOn(fake).agentRuns.create({ prompt: "hi", sandbox_id: "box", provider: "custom", command: "true" });
    const [request] = fake.requests;
    assert.equal(request!.method, "POST");
    assert.equal(request!.url.href, "http://api.test/api/v1/agent-runs");
    assert.equal(request!.headers.get("authorization"), "Bearer ark_test");
    assert.equal(request!.headers.get("content-type"), "application/json");
    assert.equal(request!.headers.get("accept"), "application/json");
    assert.equal(request!.headers.get("user-agent"), `agentruns-typescript/${VERSION}`);
    assert.match(request!.headers.get("x-request-id")!, /^[0-9a-f]{32}$/);
    assert.deepEqual(JSON.parse(request!.body!), {
      prompt: "hi",
      sandbox_id: "box",
      provider: "custom",
      command: "true",
    });
  });

  it("generates an Idempotency-Key per create, and sends the caller's as given", async () => {
    const fake = new FakeFetch(created(), created(), created());
    const client = clientOn(fake);
    await client.agentRuns.create({ prompt: "a" });
    await client.agentRuns.create({ prompt: "a" });
    await client.agentRuns.create({ prompt: "a" }, { idempotencyKey: "mine-1" });
    const [first, second, third] = fake.header("idempotency-key");
    assert.match(first!, /^sdk-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(first, second);
    assert.equal(third, "mine-1");
    assert.equal(new Set(fake.header("x-request-id")).size, 3); // one id per logical request
  });
});

describe("retries", () => {
  it("resends a create after 5xx and a dropped connection under the same key and request id", async () => {
    const fake = new FakeFetch(unavailable(), dropped(), created());
    const run = await clientOn(fake).agentRuns.create({ prompt: "once" });
    assert.equal(run.id, "r1");
    assert.equal(fake.requests.length, 3);
    assert.equal(new Set(fake.header("idempotency-key")).size, 1);
    assert.equal(new Set(fake.header("x-request-id")).size, 1);
    assert.deepEqual(new Set(fake.requests.map((r) => r.body)).size, 1);
  });

  it("resends a create whose key is still in use by the first attempt (409 idempotency_key_in_use)", async () => {
    const fake = new FakeFetch(errorResponse(409, "idempotency_key_in_use", "still creating"), created());
    assert.equal((await clientOn(fake).agentRuns.create({ prompt: "p" })).id, "r1");
    assert.equal(fake.requests.length, 2);
  });

  it("gives up after maxRetries resends with the last error", async () => {
    const fake = new FakeFetch(unavailable(), unavailable(), unavailable());
    await assert.rejects(clientOn(fake, { maxRetries: 2 }).agentRuns.get("r1"), ServerError);
    assert.equal(fake.requests.length, 3);
  });

  it("backs off exponentially between attempts", async () => {
    const fake = new FakeFetch(unavailable(), unavailable(), unavailable(), runResponse("r1", "running"));
    await clientOn(fake, { backoffBaseMs: 40 }).agentRuns.get("r1");
    const gaps = fake.requests.slice(1).map((r, i) => r.at - fake.requests[i]!.at);
    // Ceilings 40, 80, 160 ms; each pause lies between half its ceiling and (allowing for timers) a bit over it.
    [40, 80, 160].forEach((ceiling, i) => {
      assert.ok(gaps[i]! >= ceiling / 2 - 2, `gap ${i} ${gaps[i]} < ${ceiling / 2}`);
      assert.ok(gaps[i]! <= ceiling + 60, `gap ${i} ${gaps[i]} > ${ceiling}`);
    });
  });

  it("honours Retry-After on a 429, however short the backoff", async () => {
    const limited = errorResponse(429, "rate_limited", "slow down", { headers: { "Retry-After": "0.3" } });
    const fake = new FakeFetch(limited, created());
    await clientOn(fake, { backoffBaseMs: 1 }).agentRuns.create({ prompt: "p" });
    const gap = fake.requests[1]!.at - fake.requests[0]!.at;
    assert.ok(gap >= 298 && gap < 600, `waited ${gap} ms`);
    assert.equal(new Set(fake.header("idempotency-key")).size, 1);
  });

  it("resends reads (get, page, events, devices) after 5xx and dropped connections", async () => {
    const fake = new FakeFetch(
      unavailable(),
      runResponse("r1", "running"),
      dropped(),
      jsonResponse(200, { data: [], next_cursor: null }),
      unavailable(),
      jsonResponse(200, { data: [] }),
      dropped(),
      jsonResponse(200, { data: [] }),
    );
    const client = clientOn(fake);
    await client.agentRuns.get("r1");
    await client.agentRuns.page();
    await client.agentRuns.eventsPage("r1");
    await client.devices.list();
    assert.equal(fake.requests.length, 8);
  });

  it("does not resend a cancel or a device write after a 5xx or a dropped connection (they could act twice)", async () => {
    const fake = new FakeFetch(unavailable(), dropped(), unavailable());
    const client = clientOn(fake);
    await assert.rejects(client.agentRuns.cancel("r1"), ServerError);
    await assert.rejects(client.devices.create({ kind: "sandbox" }), ConnectionError);
    await assert.rejects(client.devices.update("d1", { name: "x" }), ServerError);
    assert.equal(fake.requests.length, 3);
  });

  it("resends a cancel after a 429 or a refused connection (it never arrived)", async () => {
    const limited = errorResponse(429, "rate_limited", "slow down", { headers: { "Retry-After": "0" } });
    const fake = new FakeFetch(limited, refused(), runResponse("r1", "canceled"));
    assert.equal((await clientOn(fake).agentRuns.cancel("r1")).status, "canceled");
    assert.equal(fake.requests.length, 3);
    assert.equal(new Set(fake.header("x-request-id")).size, 1);
  });
});

describe("timeouts and aborts", () => {
  const hanging = (request: { signal: AbortSignal | undefined }) =>
    new Promise<Response>((_, reject) =>
      request.signal?.addEventListener("abort", () => reject(request.signal?.reason)),
    );

  it("times out a silent server per attempt, then retries a read", async () => {
    const fake = new FakeFetch(hanging, runResponse("r1", "running"));
    const run = await clientOn(fake, { timeoutMs: 50 }).agentRuns.get("r1");
    assert.equal(run.status, "running");
    assert.equal(fake.requests.length, 2);
  });

  it("reports a timeout as a ConnectionError once retries are spent", async () => {
    const fake = new FakeFetch(hanging);
    await assert.rejects(clientOn(fake, { timeoutMs: 30, maxRetries: 0 }).agentRuns.get("r1"), (error: unknown) => {
      assert.ok(error instanceof ConnectionError);
      assert.match(error.message, /timed out after 30 ms/);
      return true;
    });
  });

  it("gives a long-poll its wait on top of the timeout", async () => {
    const fake = new FakeFetch(async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 80));
      assert.equal(request.signal?.aborted, false);
      return runResponse("r1", "succeeded");
    });
    await clientOn(fake, { timeoutMs: 30 }).agentRuns.get("r1", { wait: 1 });
    assert.equal(fake.requests[0]!.url.searchParams.get("wait"), "1");
  });

  it("stops at once when the caller aborts, even while backing off, and rejects with the signal's reason", async () => {
    const fake = new FakeFetch(unavailable(), unavailable());
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(
      clientOn(fake, { backoffBaseMs: 10_000 }).agentRuns.create({ prompt: "p" }, { signal: controller.signal }),
      (error: unknown) => error instanceof Error && error.name === "AbortError",
    );
    assert.ok(Date.now() - started < 2000);
    assert.equal(fake.requests.length, 1);
  });

  it("does not retry an aborted request", async () => {
    const controller = new AbortController();
    const fake = new FakeFetch(hanging);
    const pending = clientOn(fake).agentRuns.get("r1", { signal: controller.signal });
    controller.abort(new Error("user gave up"));
    await assert.rejects(pending, /user gave up/);
    assert.equal(fake.requests.length, 1);
  });
});

describe("configuration", () => {
  const saved = { url: process.env["AGENTRUNS_API_URL"], key: process.env["AGENTRUNS_API_KEY"] };
  afterEach(() => {
    for (const [name, value] of [
      ["AGENTRUNS_API_URL", saved.url],
      ["AGENTRUNS_API_KEY", saved.key],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it("reads AGENTRUNS_API_URL and AGENTRUNS_API_KEY when not given, and drops a trailing /api/v1", async () => {
    process.env["AGENTRUNS_API_URL"] = "http://from-env.test:9000/api/v1/";
    process.env["AGENTRUNS_API_KEY"] = "ark_env";
    const fake = new FakeFetch(jsonResponse(200, { data: [] }));
    const client = new Agentruns({ fetch: fake.fetch });
    await client.devices.list();
    assert.equal(client.baseUrl, "http://from-env.test:9000");
    assert.equal(fake.requests[0]!.url.href, "http://from-env.test:9000/api/v1/devices");
    assert.equal(fake.requests[0]!.headers.get("authorization"), "Bearer ark_env");
  });

  it("prefers the options to the environment", async () => {
    process.env["AGENTRUNS_API_KEY"] = "ark_env";
    const fake = new FakeFetch(jsonResponse(200, { data: [] }));
    await new Agentruns({ fetch: fake.fetch, apiKey: "ark_given", baseUrl: "http://given.test" }).devices.list();
    assert.equal(fake.requests[0]!.url.origin, "http://given.test");
    assert.equal(fake.requests[0]!.headers.get("authorization"), "Bearer ark_given");
  });

  it("refuses a malformed base URL at once", () => {
    assert.throws(() => new Agentruns({ baseUrl: "not a url" }), TypeError);
  });

  it("escapes ids in paths", async () => {
    const fake = new FakeFetch(jsonResponse(200, { data: { id: "a/b c" } }));
    await clientOn(fake).devices.get("a/b c");
    assert.equal(fake.requests[0]!.url.pathname, "/api/v1/devices/a%2Fb%20c");
  });
});
