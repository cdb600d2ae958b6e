/** Failures against the live API: typed errors with the request id, and a create whose answer was lost. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { before, describe, it } from "node:test";

import {
  AgentrunsError,
  AuthenticationError,
  ConnectionError,
  NotFoundError,
  ValidationError,
} from "../../src/index.js";
import { FaultProxy } from "./fault-proxy.js";
import { allowConcurrentRuns, batchId, custom, live, liveClient, recordingFetch } from "./live-env.js";

before(allowConcurrentRuns);

/** The error `promise` rejects with, checked to be an `ErrorClass` carrying the X-Request-Id that was sent
 * (the server echoes the caller's). */
async function failure<E extends AgentrunsError>(
  promise: Promise<unknown>,
  ErrorClass: new (...args: never[]) => E,
  sent: { headers: Headers }[],
): Promise<E> {
  const error = await promise.then(
    () => assert.fail("expected a rejection"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ErrorClass, `expected ${ErrorClass.name}, got ${String(error)}`);
  assert.match(error.requestId ?? "", /^[0-9a-f]{32}$/);
  assert.equal(error.requestId, sent[sent.length - 1]!.headers.get("x-request-id"));
  return error;
}

describe("errors from the live API", () => {
  it("surfaces a 422 as ValidationError with the fields", async () => {
    const recorder = recordingFetch();
    const client = liveClient({ fetch: recorder.fetch });
    const error = await failure(
      client.agentRuns.create(custom("true", { prompt: "", timeout: 0 })),
      ValidationError,
      recorder.sent,
    );
    assert.equal(error.status, 422);
    assert.equal(error.code, "validation_error");
    assert.deepEqual(Object.keys(error.fields).sort(), ["prompt", "timeout"]);
    assert.equal(recorder.sent.length, 1); // not retried
  });

  it("surfaces a 404 as NotFoundError", async () => {
    const recorder = recordingFetch();
    const error = await failure(
      liveClient({ fetch: recorder.fetch }).agentRuns.get(randomUUID()),
      NotFoundError,
      recorder.sent,
    );
    assert.equal(error.status, 404);
    assert.equal(error.code, "not_found");
  });

  it("surfaces a 401 as AuthenticationError", async () => {
    const recorder = recordingFetch();
    const client = liveClient({ apiKey: "ark_live_wrong", fetch: recorder.fetch });
    const error = await failure(client.devices.list(), AuthenticationError, recorder.sent);
    assert.equal(error.status, 401);
  });

  it("surfaces a refused connection as ConnectionError without a status", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const client = liveClient({ baseUrl: `http://127.0.0.1:${port}`, maxRetries: 1, backoffBaseMs: 1 });
    const error = await client.agentRuns.get(randomUUID()).catch((e: unknown) => e);
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.status, undefined);
  });
});

describe("a create whose answer is lost", () => {
  it("is retried under the same Idempotency-Key and makes one run", async () => {
    const proxy = new FaultProxy(new URL(live.url), ["drop"]);
    const recorder = recordingFetch();
    const batch = batchId();
    try {
      const viaProxy = liveClient({ baseUrl: await proxy.start(), fetch: recorder.fetch });
      const run = await viaProxy.agentRuns.create(custom("true", { metadata: { batch } }));
      assert.equal(proxy.serverAnsweredDroppedRequest, true); // the server did process the first attempt
      assert.equal(recorder.sent.length, 2);
      const keys = new Set(recorder.sent.map((r) => r.headers.get("idempotency-key")));
      assert.equal(keys.size, 1);
      assert.match([...keys][0] ?? "", /^sdk-/); // generated, since the caller gave none
      assert.equal(new Set(recorder.sent.map((r) => r.headers.get("x-request-id"))).size, 1);
      const listed = [];
      for await (const r of liveClient().agentRuns.list({ metadata: { batch } })) listed.push(r.id);
      assert.deepEqual(listed, [run.id]);
    } finally {
      await proxy.close();
    }
  });
});
