/** Live events over a fake fetch: SSE delivery, resume with Last-Event-ID, dedupe, the JSON and polling
 * fallbacks, closing by break or AbortSignal. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { AgentrunsError, NotFoundError, type RunEvent } from "../../src/index.js";
import {
  FakeFetch,
  clientOn,
  dropped,
  errorResponse,
  frame,
  jsonResponse,
  runResponse,
  sseReply,
} from "../helpers/fake-fetch.js";

const status = (seq: number, value: string) => frame(seq, "status", { status: value });
const out = (seq: number, text: string) => frame(seq, "stdout", text);

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const got: RunEvent[] = [];
  for await (const event of events) got.push(event);
  return got;
}

const seqs = (events: RunEvent[]) => events.map((e) => e.seq);
// For streams left open by the fake server: only the SDK closing them ends these tests in time (the
// 45 s silence timeout would end them too, but late).
const QUICK = { timeout: 2000 };

describe("stream over SSE", () => {
  it("yields events until the terminal status, then closes the connection", QUICK, async () => {
    // `hang`: the server would keep the connection open; the SDK must stop on the terminal event itself.
    const fake = new FakeFetch(
      sseReply(["retry: 1000\n\n", status(1, "queued"), out(2, "a\n"), status(3, "succeeded"), out(4, "late")], {
        hang: true,
      }),
    );
    const events = await collect(clientOn(fake).agentRuns.stream("r1"));
    assert.deepEqual(seqs(events), [1, 2, 3]);
    assert.deepEqual(events[2]!.data, { status: "succeeded" });
    const [request] = fake.requests;
    assert.equal(request!.headers.get("accept"), "text/event-stream");
    assert.equal(request!.headers.get("last-event-id"), null);
    assert.equal(request!.url.pathname, "/api/v1/agent-runs/r1/events");
    assert.equal(request!.signal?.aborted, true); // released
  });

  it("resumes a dropped connection with Last-Event-ID and delivers a replayed event once", async () => {
    const fake = new FakeFetch(
      sseReply([status(1, "queued"), out(5, "a"), 'id: 9\nevent: stdout\ndata: {"seq": 9, "ty', dropped()]),
      sseReply([out(5, "a"), out(9, "b"), status(12, "succeeded")]), // this server replays from an older seq
    );
    const events = await collect(clientOn(fake).agentRuns.stream("r1"));
    assert.deepEqual(seqs(events), [1, 5, 9, 12]);
    assert.equal(fake.requests.length, 2);
    assert.equal(fake.requests[1]!.headers.get("last-event-id"), "5");
    assert.equal(fake.requests[1]!.url.searchParams.get("after_seq"), "5");
  });

  it("resumes after a connection that ends cleanly mid-run, and starts from afterSeq", async () => {
    const fake = new FakeFetch(sseReply([out(11, "x")]), sseReply([status(12, "failed")]));
    const events = await collect(clientOn(fake).agentRuns.stream("r1", { afterSeq: 10 }));
    assert.deepEqual(seqs(events), [11, 12]);
    assert.deepEqual(fake.header("last-event-id"), ["10", "11"]);
  });

  it("reconnects after a 503 with backoff, and gives up after maxRetries failures in a row", async () => {
    const busy = () => errorResponse(503, "unavailable", "busy");
    const fake = new FakeFetch(busy(), sseReply([status(1, "succeeded")]));
    assert.deepEqual(seqs(await collect(clientOn(fake).agentRuns.stream("r1"))), [1]);
    const failing = new FakeFetch(busy(), busy(), busy());
    await assert.rejects(collect(clientOn(failing, { maxRetries: 2 }).agentRuns.stream("r1")), /busy/);
    assert.equal(failing.requests.length, 3);
  });

  it("reopens a connection that stays silent past idleTimeoutMs", QUICK, async () => {
    const fake = new FakeFetch(sseReply([status(1, "queued")], { hang: true }), sseReply([status(2, "succeeded")]));
    const events = await collect(clientOn(fake).agentRuns.stream("r1", { idleTimeoutMs: 50 }));
    assert.deepEqual(seqs(events), [1, 2]);
    assert.equal(fake.requests[0]!.signal?.aborted, true);
    assert.equal(fake.requests[1]!.headers.get("last-event-id"), "1");
  });

  it("raises a 404 at once", async () => {
    const fake = new FakeFetch(errorResponse(404, "not_found", "no such run"));
    await assert.rejects(collect(clientOn(fake).agentRuns.stream("nope")), NotFoundError);
    assert.equal(fake.requests.length, 1);
  });

  it("asks the run when a stream ends with no event, and reads what is left of a finished run's log", async () => {
    const fake = new FakeFetch(
      sseReply([": keepalive\n\n"]),
      runResponse("r1", "succeeded"),
      jsonResponse(200, { data: [{ seq: 4, type: "status", data: { status: "succeeded" }, at: null }] }),
    );
    const events = await collect(clientOn(fake).agentRuns.stream("r1", { afterSeq: 3 }));
    assert.deepEqual(seqs(events), [4]);
    assert.equal(fake.requests[2]!.url.searchParams.get("after_seq"), "3");
  });
});

describe("stream fallbacks", () => {
  it("delivers a JSON answer's events, then polls after them until the terminal event", async () => {
    const page = [
      { seq: 1, type: "status", data: { status: "queued" }, at: null },
      { seq: 2, type: "stdout", data: "a", at: null },
    ];
    const fake = new FakeFetch(
      jsonResponse(200, { data: page }), // a proxy that does not stream
      jsonResponse(200, { data: [{ seq: 3, type: "status", data: '{"status": "succeeded"}', at: null }] }),
    );
    const events = await collect(clientOn(fake).agentRuns.stream("r1"));
    assert.deepEqual(seqs(events), [1, 2, 3]);
    assert.deepEqual(events[2]!.data, { status: "succeeded" });
    assert.equal(fake.requests[1]!.url.searchParams.get("after_seq"), "2");
    assert.equal(fake.requests[1]!.headers.get("accept"), "application/json");
  });

  it("refuses a JSON answer when SSE was asked for", async () => {
    const fake = new FakeFetch(jsonResponse(200, { data: [] }));
    await assert.rejects(collect(clientOn(fake).agentRuns.stream("r1", { transport: "sse" })), (error: unknown) => {
      return error instanceof AgentrunsError && error.code === "sse_unsupported";
    });
  });

  it("polls with transport 'poll', asking the run when nothing is new", async () => {
    const fake = new FakeFetch(
      jsonResponse(200, { data: [{ seq: 1, type: "stdout", data: "a", at: null }] }),
      jsonResponse(200, { data: [] }),
      runResponse("r1", "running"),
      jsonResponse(200, { data: [{ seq: 2, type: "status", data: { status: "canceled" }, at: null }] }),
    );
    const events = await collect(clientOn(fake).agentRuns.stream("r1", { transport: "poll", pollIntervalMs: 1 }));
    assert.deepEqual(seqs(events), [1, 2]);
    assert.deepEqual(
      fake.requests.map((r) => r.url.pathname.endsWith("/events")),
      [true, true, false, true],
    );
  });

  it("checks the transport when called, not when iterated", () => {
    const client = clientOn(new FakeFetch());
    assert.throws(() => client.agentRuns.stream("r1", { transport: "carrier-pigeon" as "sse" }), TypeError);
  });
});

describe("closing a stream", () => {
  it("closes the connection when the caller leaves the loop", QUICK, async () => {
    const fake = new FakeFetch(sseReply([status(1, "queued"), out(2, "a")], { hang: true }));
    for await (const event of clientOn(fake).agentRuns.stream("r1")) {
      if (event.seq === 2) break;
    }
    assert.equal(fake.requests[0]!.signal?.aborted, true);
  });

  it("closes the connection and throws the reason when the signal aborts mid-stream", QUICK, async () => {
    const fake = new FakeFetch(sseReply([status(1, "queued")], { hang: true }));
    const controller = new AbortController();
    const got: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const event of clientOn(fake).agentRuns.stream("r1", { signal: controller.signal })) {
          got.push(event.seq);
          controller.abort(new Error("enough"));
        }
      })(),
      /enough/,
    );
    assert.deepEqual(got, [1]);
    assert.equal(fake.requests.length, 1); // not taken for a dropped connection: no reconnect
    assert.equal(fake.requests[0]!.signal?.aborted, true);
  });
});
