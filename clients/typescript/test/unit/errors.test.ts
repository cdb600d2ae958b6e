/** Every failure surfaces as the right AgentrunsError subclass, carrying code, status, request id, details. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  AgentrunsError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  ConnectionError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  ServerError,
  ValidationError,
} from "../../src/index.js";
import { FakeFetch, clientOn, errorResponse, jsonResponse, refused } from "../helpers/fake-fetch.js";

async function failureOf(promise: Promise<unknown>): Promise<AgentrunsError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AgentrunsError, `not an AgentrunsError: ${String(error)}`);
    return error;
  }
  assert.fail("expected a rejection");
}

describe("errors from answers", () => {
  const cases: [number, string, typeof AgentrunsError][] = [
    [400, "bad_request", BadRequestError],
    [401, "unauthorized", AuthenticationError],
    [403, "forbidden", PermissionDeniedError],
    [404, "not_found", NotFoundError],
    [409, "conflict", ConflictError],
    [413, "too_large", BadRequestError],
    [422, "validation_error", ValidationError],
  ];
  for (const [status, code, ErrorClass] of cases) {
    it(`maps ${status} to ${ErrorClass.name}`, async () => {
      const fake = new FakeFetch(
        errorResponse(status, code, `the ${code}`, { requestId: "rid-1", details: { why: 1 } }),
      );
      const error = await failureOf(clientOn(fake).agentRuns.get("r1"));
      assert.ok(error instanceof ErrorClass);
      assert.equal(error.name, ErrorClass.name);
      assert.deepEqual(
        [error.status, error.code, error.message, error.requestId, error.details],
        [status, code, `the ${code}`, "rid-1", { why: 1 }],
      );
      assert.equal(fake.requests.length, 1); // none of these is retried
    });
  }

  it("gives a 422's per-field messages", async () => {
    const fields = { prompt: ["required"], timeout: ["must be at least 1"] };
    const fake = new FakeFetch(errorResponse(422, "validation_error", "prompt: required", { details: { fields } }));
    const error = await failureOf(clientOn(fake).agentRuns.create({ prompt: "" }));
    assert.ok(error instanceof ValidationError);
    assert.deepEqual(error.fields, fields);
  });

  it("gives a 429's Retry-After once retries are spent", async () => {
    const limited = () => errorResponse(429, "rate_limited", "slow down", { headers: { "Retry-After": "0" } });
    const fake = new FakeFetch(limited(), limited());
    const error = await failureOf(clientOn(fake, { maxRetries: 1 }).agentRuns.get("r1"));
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.retryAfter, 0);
    assert.equal(fake.requests.length, 2);
  });

  it("copes with a proxy's HTML page: the status, the page's text and the X-Request-Id header", async () => {
    const page = new Response("<html>\n<h1>Bad Gateway</h1>\n</html>", {
      status: 502,
      statusText: "Bad Gateway",
      headers: { "Content-Type": "text/html", "X-Request-Id": "rid-proxy" },
    });
    const error = await failureOf(clientOn(new FakeFetch(page)).devices.delete("d1"));
    assert.ok(error instanceof ServerError);
    assert.equal(error.code, "http_502");
    assert.equal(error.message, "HTTP 502 Bad Gateway: <html> <h1>Bad Gateway</h1> </html>");
    assert.equal(error.requestId, "rid-proxy");
  });

  it("takes a 2xx that is not the API's envelope for a server failure", async () => {
    const fake = new FakeFetch(new Response("OK", { status: 200 }));
    const error = await failureOf(clientOn(fake).agentRuns.get("r1"));
    assert.ok(error instanceof ServerError);
    assert.equal(error.code, "bad_response");
  });

  it("turns a failed fetch into a ConnectionError with the sent request id and the cause", async () => {
    const fake = new FakeFetch(refused());
    const error = await failureOf(clientOn(fake, { maxRetries: 0 }).agentRuns.get("r1"));
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.status, undefined);
    assert.equal(error.code, "connection_failed");
    assert.equal(error.requestId, fake.requests[0]!.headers.get("x-request-id"));
    assert.match(error.message, /ECONNREFUSED.*GET \/api\/v1\/agent-runs\/r1/);
    assert.ok(error.cause instanceof TypeError);
  });

  it("prints code, status and request id", async () => {
    const fake = new FakeFetch(errorResponse(404, "not_found", "no run r1", { requestId: "rid-9" }));
    const error = await failureOf(clientOn(fake).agentRuns.get("r1"));
    assert.equal(String(error), "NotFoundError: no run r1 (code=not_found, status=404, request_id=rid-9)");
  });

  it("keeps the success path's JSON intact", async () => {
    const fake = new FakeFetch(jsonResponse(200, { data: [] }));
    assert.deepEqual(await clientOn(fake).devices.list(), []);
  });
});
