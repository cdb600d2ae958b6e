/** The event-stream parser and event normalisation, fed the way a network delivers: in arbitrary pieces. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  LineSplitter,
  type SSEMessage,
  SSEDecoder,
  eventFromSSE,
  normalizeEvent,
  terminalStatus,
} from "../../src/sse.js";
import { frame } from "../helpers/fake-fetch.js";

function parse(chunks: string[]): SSEMessage[] {
  const lines = new LineSplitter();
  const decoder = new SSEDecoder();
  const out: SSEMessage[] = [];
  for (const chunk of chunks) {
    for (const line of lines.push(chunk)) {
      const message = decoder.feed(line);
      if (message) out.push(message);
    }
  }
  return out;
}

/** Every way of cutting `text` in two. */
function everySplit(text: string): string[][] {
  return Array.from({ length: text.length + 1 }, (_, i) => [text.slice(0, i), text.slice(i)]);
}

describe("SSE parsing", () => {
  const stream =
    "retry: 1000\n\n: keepalive\n\n" + frame(7, "stdout", "a\n") + frame(8, "status", { status: "succeeded" });

  it("yields one message per event, whatever the chunking", () => {
    for (const chunks of [[stream], stream.split(""), ...everySplit(stream)]) {
      const messages = parse(chunks);
      assert.deepEqual(
        messages.map((m) => [m.id, m.event]),
        [
          ["7", "stdout"],
          ["8", "status"],
        ],
      );
    }
  });

  it("accepts CRLF and CR line endings, also when CR and LF arrive apart", () => {
    const crlf = "id: 1\r\nevent: stdout\r\ndata: x\r\n\r\n";
    for (const chunks of [[crlf], ...everySplit(crlf), [crlf.replaceAll("\r\n", "\r")]]) {
      assert.deepEqual(parse(chunks), [{ data: "x", event: "stdout", id: "1", retry: undefined }]);
    }
  });

  it("joins multi-line data, strips one leading space, and defaults the event to 'message'", () => {
    assert.deepEqual(parse(["data:  two spaces\ndata:line2\nretry: 5\n\n"]), [
      { data: " two spaces\nline2", event: "message", id: undefined, retry: 5 },
    ]);
  });

  it("drops a message without data but keeps its id as the last event id, and drops an unfinished one", () => {
    const decoder = new SSEDecoder();
    for (const line of ["id: 41", "", "data: tail"]) assert.equal(decoder.feed(line), undefined);
    assert.equal(decoder.lastEventId, "41");
  });

  it("ignores an id holding NUL and a retry that is not a number", () => {
    assert.deepEqual(parse(["id: 1\0\nretry: soon\ndata: x\n\n"]), [
      { data: "x", event: "message", id: undefined, retry: undefined },
    ]);
  });
});

describe("run events", () => {
  it("reads the JSON payload the server sends", () => {
    const [message] = parse([frame(3, "status", { status: "running" })]);
    assert.deepEqual(eventFromSSE(message!), {
      seq: 3,
      type: "status",
      data: { status: "running" },
      at: "2026-01-01T00:00:00+00:00",
    });
  });

  it("rebuilds an event from bare SSE fields, and ignores messages that are not run events", () => {
    assert.deepEqual(eventFromSSE({ data: "hello", event: "stdout", id: "5", retry: undefined }), {
      seq: 5,
      type: "stdout",
      data: "hello",
      at: null,
    });
    assert.equal(eventFromSSE({ data: "hello", event: "message", id: "5", retry: undefined }), undefined);
    assert.equal(eventFromSSE({ data: "hello", event: "stdout", id: undefined, retry: undefined }), undefined);
  });

  it("decodes status and note data given as JSON strings, leaving output alone", () => {
    assert.deepEqual(
      normalizeEvent({ seq: 1, type: "status", data: '{"status": "failed", "error": {"code": "timeout"}}', at: null })
        .data,
      { status: "failed", error: { code: "timeout" } },
    );
    assert.deepEqual(normalizeEvent({ seq: 1, type: "status", data: "running", at: null }).data, { status: "running" });
    assert.deepEqual(normalizeEvent({ seq: 1, type: "note", data: '"capped"', at: null }).data, { note: "capped" });
    assert.equal(normalizeEvent({ seq: 1, type: "stdout", data: '{"a": 1}', at: null }).data, '{"a": 1}');
  });

  it("knows a terminal status event", () => {
    assert.equal(terminalStatus({ seq: 1, type: "status", data: { status: "canceled" }, at: null }), "canceled");
    assert.equal(terminalStatus({ seq: 1, type: "status", data: { status: "running" }, at: null }), undefined);
    assert.equal(terminalStatus({ seq: 1, type: "stdout", data: "succeeded", at: null }), undefined);
  });
});
