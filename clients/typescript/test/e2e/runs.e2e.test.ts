/** Runs against the live API: a custom command's output, listing across pages, cancelling. */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";

import { ConflictError } from "../../src/index.js";
import { allowConcurrentRuns, batchId, custom, live, liveClient } from "./live-env.js";

const client = liveClient();
before(allowConcurrentRuns);

describe("runs on a real device", () => {
  it("runs a custom command and reads its output", async () => {
    const run = await client.agentRuns.run(
      custom('echo "got:$(cat)"; pwd', { prompt: "hello ts", metadata: { t: "run" } }),
      {
        timeoutMs: 60_000,
      },
    );
    assert.equal(run.status, "succeeded", JSON.stringify(run));
    assert.equal(run.output, `got:hello ts\n${live.workdir}\n`);
    assert.equal(run.exit_code, 0);
    assert.deepEqual(run.metadata, { t: "run" });
    assert.ok(run.finished_at);

    const failed = await client.agentRuns.run(custom("echo oops >&2; exit 4"), { timeoutMs: 60_000 });
    assert.equal(failed.status, "failed");
    assert.equal(failed.exit_code, 4);
    assert.equal(failed.error?.code, "nonzero_exit");
    assert.equal(failed.stderr, "oops\n");
    assert.deepEqual(await client.agentRuns.get(failed.id), failed);
  });

  it("lists with a metadata filter across pages, newest first", async () => {
    const batch = batchId();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await client.agentRuns.create(custom("true", { prompt: `n${i}`, metadata: { batch } }))).id);
    await client.agentRuns.create(custom("true", { metadata: { batch: `${batch}-other` } }));

    const first = await client.agentRuns.page({ limit: 2, metadata: { batch } });
    assert.equal(first.data.length, 2);
    assert.ok(first.next_cursor);
    const pages = [];
    for await (const page of client.agentRuns.list({ limit: 2, metadata: { batch } }).pages())
      pages.push(page.data.map((r) => r.id));
    assert.deepEqual(pages, [ids.slice(3).reverse(), ids.slice(1, 3).reverse(), ids.slice(0, 1)]);
    const listed: string[] = [];
    for await (const run of client.agentRuns.list({ limit: 2, provider: "custom", metadata: { batch } }))
      listed.push(run.id);
    assert.deepEqual(listed, [...ids].reverse());
  });

  it("cancels a running run; a finished one is a ConflictError", async () => {
    const run = await client.agentRuns.create(custom("echo started; sleep 30"));
    for await (const event of client.agentRuns.stream(run.id)) {
      if (event.type === "stdout") break; // it is running on the device now
    }
    const asked = await client.agentRuns.cancel(run.id);
    assert.equal(asked.status, "running");
    assert.equal(asked.cancel_requested, true);
    const done = await client.agentRuns.wait(run.id, { timeoutMs: 20_000 });
    assert.equal(done.status, "canceled", JSON.stringify(done));
    assert.equal(done.error?.code, "canceled");
    assert.equal((await client.agentRuns.cancel(run.id)).status, "canceled"); // repeating changes nothing
    const finished = await client.agentRuns.run(custom("true"), { timeoutMs: 60_000 });
    await assert.rejects(client.agentRuns.cancel(finished.id), (error: unknown) => {
      assert.ok(error instanceof ConflictError);
      assert.equal(error.status, 409);
      assert.ok(error.requestId);
      return true;
    });
  });

  it("replays a create sent twice with one Idempotency-Key", async () => {
    const key = `ts-${batchId()}`;
    const first = await client.agentRuns.create(custom("true"), { idempotencyKey: key });
    const again = await client.agentRuns.create(custom("true"), { idempotencyKey: key });
    assert.equal(again.id, first.id);
  });
});
