/** Live output over SSE from the real server, and resuming after the connection is cut or closed. */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";

import type { RunEvent } from "../../src/index.js";
import { FaultProxy } from "./fault-proxy.js";
import { allowConcurrentRuns, custom, live, liveClient, recordingFetch } from "./live-env.js";

const client = liveClient();
before(allowConcurrentRuns);

const text = (events: RunEvent[], type: "stdout" | "stderr") =>
  events.flatMap((e) => (e.type === type ? [e.data] : [])).join("");

function assertOrderedOnce(events: RunEvent[]): void {
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(
    seqs,
    [...new Set(seqs)].sort((a, b) => a - b),
    `duplicated or out of order: ${seqs}`,
  );
}

describe("streaming a run", () => {
  it("streams live output while the command runs", async () => {
    const run = await client.agentRuns.create(custom("echo one; echo two >&2; sleep 1.5; echo three"));
    const events: RunEvent[] = [];
    let statusAtFirstOutput: string | undefined;
    for await (const event of client.agentRuns.stream(run.id, { transport: "sse" })) {
      if (event.type === "stdout" && statusAtFirstOutput === undefined) {
        statusAtFirstOutput = (await client.agentRuns.get(run.id)).status;
      }
      events.push(event);
    }
    assert.equal(statusAtFirstOutput, "running"); // output arrived while the command still ran
    assertOrderedOnce(events);
    assert.deepEqual(
      events.flatMap((e) => (e.type === "status" ? [e.data.status] : [])),
      ["queued", "running", "succeeded"],
    );
    assert.equal(text(events, "stdout"), "one\nthree\n");
    assert.equal(text(events, "stderr"), "two\n");
    assert.deepEqual(await client.agentRuns.events(run.id), events);
  });

  it("resumes with Last-Event-ID after the connection is cut mid-stream, with no gap and no duplicate", async () => {
    const run = await client.agentRuns.create(custom("echo a; sleep 0.3; echo b; sleep 0.3; echo c"));
    const proxy = new FaultProxy(new URL(live.url), [{ cutAfterEvents: 2 }]);
    const recorder = recordingFetch();
    try {
      const viaProxy = liveClient({ baseUrl: await proxy.start(), fetch: recorder.fetch });
      const events: RunEvent[] = [];
      for await (const event of viaProxy.agentRuns.stream(run.id, { transport: "sse" })) events.push(event);

      assert.deepEqual(events, await client.agentRuns.events(run.id));
      assertOrderedOnce(events);
      assert.equal(text(events, "stdout"), "a\nb\nc\n");
      const streams = recorder.sent.filter((r) => r.headers.get("accept") === "text/event-stream");
      assert.ok(streams.length >= 2, "no reconnect");
      assert.equal(streams[0]!.headers.get("last-event-id"), null);
      assert.equal(streams[1]!.headers.get("last-event-id"), String(events[1]!.seq));
      assert.deepEqual(proxy.actions[0], { cutAfterEvents: 2 });
    } finally {
      await proxy.close();
    }
  });

  it("closes with an AbortSignal, and a new stream from the last seq delivers the rest exactly", async () => {
    const run = await client.agentRuns.create(custom("echo a; sleep 1; echo b"));
    const controller = new AbortController();
    const before: RunEvent[] = [];
    await assert.rejects(
      (async () => {
        for await (const event of client.agentRuns.stream(run.id, { signal: controller.signal })) {
          before.push(event);
          if (event.type === "stdout") controller.abort();
        }
      })(),
      (error: unknown) => error instanceof Error && error.name === "AbortError",
    );
    const afterSeq = before[before.length - 1]!.seq;
    const rest: RunEvent[] = [];
    for await (const event of client.agentRuns.stream(run.id, { afterSeq })) rest.push(event);

    const all = [...before, ...rest];
    assertOrderedOnce(all);
    assert.deepEqual(all, await client.agentRuns.events(run.id));
    assert.equal(text(before, "stdout"), "a\n");
    assert.equal(text(rest, "stdout"), "b\n");
  });
});
