/** run, wait, list and devices over a fake fetch: the long-poll loop, the overall timeout, pagination. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { WaitTimeoutError } from "../../src/index.js";
import { FakeFetch, clientOn, jsonResponse, runBody, runResponse } from "../helpers/fake-fetch.js";

describe("run and wait", () => {
  it("creates, then long-polls until the run is terminal", async () => {
    const fake = new FakeFetch(
      runResponse("r1", "queued", {}, 201),
      runResponse("r1", "running"),
      runResponse("r1", "succeeded", { output: "hi\n" }),
    );
    const run = await clientOn(fake).agentRuns.run({
      prompt: "p",
      sandbox_id: "box",
      provider: "custom",
      command: "echo hi",
    });
    assert.equal(run.status, "succeeded");
    assert.equal(run.output, "hi\n");
    assert.deepEqual(
      fake.requests.map((r) => `${r.method} ${r.url.pathname}${r.url.search}`),
      ["POST /api/v1/agent-runs", "GET /api/v1/agent-runs/r1?wait=60", "GET /api/v1/agent-runs/r1?wait=60"],
    );
  });

  it("returns a run the create already finished (wait in the body) without polling", async () => {
    const fake = new FakeFetch(runResponse("r1", "failed", { exit_code: 2 }, 201));
    const run = await clientOn(fake).agentRuns.run({ prompt: "p", wait: true });
    assert.equal(run.exit_code, 2);
    assert.equal(fake.requests.length, 1);
    assert.equal(JSON.parse(fake.requests[0]!.body!).wait, true);
  });

  it("shortens the last long-poll to the time left, then throws WaitTimeoutError carrying the run", async () => {
    const fake = new FakeFetch(runResponse("r1", "queued", {}, 201));
    fake.fallback = () => runResponse("r1", "running");
    const started = Date.now();
    await assert.rejects(
      clientOn(fake).agentRuns.run({ prompt: "p" }, { timeoutMs: 1500, pollWaitSeconds: 30 }),
      (error: unknown) => {
        assert.ok(error instanceof WaitTimeoutError);
        assert.equal(error.run.status, "running");
        assert.equal(error.code, "wait_timeout");
        return true;
      },
    );
    assert.ok(Date.now() - started >= 1500);
    assert.equal(fake.requests[1]!.url.searchParams.get("wait"), "2"); // ceil(1.5 s left), not 30
  });

  it("passes a custom poll wait", async () => {
    const fake = new FakeFetch(runResponse("r1", "canceled"));
    await clientOn(fake).agentRuns.wait("r1", { pollWaitSeconds: 5 });
    assert.equal(fake.requests[0]!.url.searchParams.get("wait"), "5");
  });
});

describe("list", () => {
  const page = (ids: string[], next: string | null) =>
    jsonResponse(200, { data: ids.map((id) => runBody(id, "succeeded")), next_cursor: next });

  it("follows next_cursor with the same filters, metadata as metadata[KEY]", async () => {
    const fake = new FakeFetch(page(["c", "b"], "cur-1"), page(["a"], null));
    const list = clientOn(fake).agentRuns.list({ limit: 2, status: "succeeded", metadata: { batch: "b1", n: 3 } });
    const ids: string[] = [];
    for await (const run of list) ids.push(run.id);
    assert.deepEqual(ids, ["c", "b", "a"]);
    const [first, second] = fake.requests.map((r) => r.url.searchParams);
    assert.deepEqual(
      [...first!],
      [
        ["limit", "2"],
        ["status", "succeeded"],
        ["metadata[batch]", "b1"],
        ["metadata[n]", "3"],
      ],
    );
    assert.equal(second!.get("cursor"), "cur-1");
    assert.equal(second!.get("metadata[batch]"), "b1");
  });

  it("gives whole pages, and starts afresh on each iteration", async () => {
    const fake = new FakeFetch(page(["b"], "cur-1"), page(["a"], null), page(["b"], "cur-1"), page(["a"], null));
    const list = clientOn(fake).agentRuns.list();
    const pages = [];
    for await (const p of list.pages()) pages.push(p.data.map((r) => r.id));
    assert.deepEqual(pages, [["b"], ["a"]]);
    assert.deepEqual(
      (await list.toArray()).map((r) => r.id),
      ["b", "a"],
    );
  });

  it("sends dates as ISO strings and gives one page at a time", async () => {
    const fake = new FakeFetch(page(["a"], "next"));
    const one = await clientOn(fake).agentRuns.page({ created_after: new Date("2026-01-02T03:04:05Z"), cursor: "c0" });
    assert.equal(one.next_cursor, "next");
    assert.equal(fake.requests[0]!.url.searchParams.get("created_after"), "2026-01-02T03:04:05.000Z");
    assert.equal(fake.requests[0]!.url.searchParams.get("cursor"), "c0");
  });
});

describe("events", () => {
  it("reads the whole log page by page", async () => {
    const row = (seq: number) => ({ seq, type: "stdout", data: String(seq), at: null });
    const fake = new FakeFetch(jsonResponse(200, { data: [row(1), row(2)] }), jsonResponse(200, { data: [row(3)] }));
    const events = await clientOn(fake).agentRuns.events("r1", { limit: 2 });
    assert.deepEqual(
      events.map((e) => e.seq),
      [1, 2, 3],
    );
    assert.equal(fake.requests[1]!.url.searchParams.get("after_seq"), "2");
  });
});

describe("devices", () => {
  const device = { id: "d1", kind: "computer", driver: "ssh" };

  it("creates without null fields, updates with them, deletes, tests", async () => {
    const fake = new FakeFetch(
      jsonResponse(201, { data: device }),
      jsonResponse(200, { data: device }),
      new Response(null, { status: 204 }),
      jsonResponse(200, { data: { ok: true, latency_ms: 3.2, host_key: "k", error: null } }),
    );
    const client = clientOn(fake);
    await client.devices.create({ id: "d1", kind: "computer", host: "h", name: null });
    await client.devices.update("d1", { password: null });
    assert.equal(await client.devices.delete("d1"), undefined);
    assert.equal((await client.devices.test("d1")).ok, true);
    assert.deepEqual(
      fake.requests.map((r) => [r.method, r.url.pathname, r.body]),
      [
        ["POST", "/api/v1/devices", '{"id":"d1","kind":"computer","host":"h"}'],
        ["PATCH", "/api/v1/devices/d1", '{"password":null}'],
        ["DELETE", "/api/v1/devices/d1", undefined],
        ["POST", "/api/v1/devices/d1/test", undefined],
      ],
    );
  });
});
