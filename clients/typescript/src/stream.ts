/**
 * Live run events (mirrors agentruns/client_stream.py): Server-Sent Events over fetch, resumed with
 * Last-Event-ID after a dropped connection, or polling /events. Polling stays as a fallback on
 * purpose: some proxies buffer or cut event streams, and a server without SSE answers the same URL
 * with the JSON event list (delivered, then polling goes on after it). Whatever the path, an event is
 * delivered once (by seq), and the stream ends at the run's terminal status event.
 */
import { sleep } from "./abort.js";
import { AgentrunsError, ConnectionError, connectionError, errorFromAnswer, parseRetryAfter } from "./errors.js";
import { type Call, type Http, type OpenStream, readAnswer } from "./http.js";
import { backoffDelay } from "./retry.js";
import { LineSplitter, SSEDecoder, eventFromSSE, normalizeEvent, terminalStatus } from "./sse.js";
import type { AgentRun, RunEvent } from "./types.js";
import { isTerminal } from "./vocabulary.js";

/** The server sends a keepalive comment every 15 s, so a connection silent for this long is dead. */
export const SSE_IDLE_TIMEOUT_MS = 45_000;
const MAX_POLL_INTERVAL_MS = 2_000;

/** How `stream` reads events: SSE falling back to polling ("auto"), SSE only, or polling only. */
export type Transport = "auto" | "sse" | "poll";

/** Options of `client.agentRuns.stream`. */
export interface StreamOptions {
  /** Deliver only events after this seq (resume where an earlier stream stopped). Default 0: all. */
  afterSeq?: number;
  /** Default "auto". */
  transport?: Transport;
  /** First pause between polls when polling, in ms (it grows to 2 s while nothing happens). Default 500. */
  pollIntervalMs?: number;
  /** An SSE connection that sends nothing (not even a keepalive) for this long is reopened. Default 45 000. */
  idleTimeoutMs?: number;
  /** Aborting it closes the stream: the loop then throws the signal's reason. */
  signal?: AbortSignal;
}

/** What the stream needs of `client.agentRuns`. */
export interface EventReader {
  get(runId: string, options?: { signal?: AbortSignal | undefined }): Promise<AgentRun>;
  eventsPage(runId: string, options?: { afterSeq?: number; signal?: AbortSignal | undefined }): Promise<RunEvent[]>;
  events(runId: string, options?: { afterSeq?: number; signal?: AbortSignal | undefined }): Promise<RunEvent[]>;
}

/** Where a stream stands: the last seq delivered (dedupe, Last-Event-ID) and whether it has ended. */
export class Cursor {
  ended = false;
  constructor(public last: number) {}

  /** Should `event` be delivered? Not one already delivered (a server replaying on resume), nor
   * anything after the terminal status event. */
  accept(event: RunEvent): boolean {
    if (this.ended || event.seq <= this.last) return false;
    this.last = event.seq;
    this.ended = terminalStatus(event) !== undefined;
    return true;
  }
}

/** One stream's settings and state, shared by the steps below. */
interface Follow {
  readonly runs: EventReader;
  readonly http: Http;
  readonly runId: string;
  readonly cursor: Cursor;
  readonly transport: Transport;
  readonly pollIntervalMs: number;
  readonly idleTimeoutMs: number;
  readonly signal: AbortSignal | undefined;
}

/** How one SSE connection went. */
interface Connection {
  delivered: number;
  /** A transient failure: reconnect after a backoff. */
  error?: AgentrunsError;
  retryAfterMs?: number;
  /** False: the server answered JSON, so go on by polling. */
  streaming: boolean;
}

/** Yield the run's events after `afterSeq` until its terminal status event. */
export function streamEvents(
  runs: EventReader,
  http: Http,
  runId: string,
  options: StreamOptions = {},
): AsyncGenerator<RunEvent, void, undefined> {
  const transport = options.transport ?? "auto";
  // Checked now, not when the caller starts iterating.
  if (!["auto", "sse", "poll"].includes(transport)) throw new TypeError("transport must be 'auto', 'sse' or 'poll'");
  return follow({
    runs,
    http,
    runId,
    cursor: new Cursor(options.afterSeq ?? 0),
    transport,
    pollIntervalMs: options.pollIntervalMs ?? 500,
    idleTimeoutMs: options.idleTimeoutMs ?? SSE_IDLE_TIMEOUT_MS,
    signal: options.signal,
  });
}

async function* follow(f: Follow): AsyncGenerator<RunEvent, void, undefined> {
  const { maxRetries, backoffBaseMs } = f.http.config;
  let failures = 0;
  while (f.transport !== "poll") {
    const connection = yield* sseConnection(f);
    if (f.cursor.ended) return;
    if (!connection.streaming) break;
    if (connection.delivered) failures = 0;
    if (connection.error === undefined) {
      if (connection.delivered) continue; // cut before the end (a proxy, a server restart): resume at once
      // Ended without a single event: the run may be over with its terminal event already behind us.
      if (isTerminal((await f.runs.get(f.runId, { signal: f.signal })).status)) {
        yield* emitRest(f);
        return;
      }
    }
    failures += 1;
    if (failures > maxRetries) {
      throw (
        connection.error ?? new AgentrunsError("the event stream keeps ending without events", { code: "stream_ended" })
      );
    }
    await sleep(backoffDelay(failures - 1, backoffBaseMs, connection.retryAfterMs), f.signal);
  }
  yield* poll(f);
}

function sseCall(f: Follow): Call {
  const headers: Record<string, string> = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
  if (f.cursor.last) headers["Last-Event-ID"] = String(f.cursor.last);
  return {
    method: "GET",
    path: `/api/v1/agent-runs/${encodeURIComponent(f.runId)}/events`,
    query: { after_seq: f.cursor.last },
    headers,
    retry: "safe", // not resent by Http: the stream's loop reconnects
    signal: f.signal,
  };
}

/** One SSE connection: yield its new events; a transient failure comes back in the Connection. */
async function* sseConnection(f: Follow): AsyncGenerator<RunEvent, Connection, undefined> {
  let delivered = 0;
  let stream: OpenStream | undefined;
  try {
    stream = await f.http.open(sseCall(f));
    const { status, headers } = stream.response;
    if (status >= 400) {
      const error = errorFromAnswer(await readAnswer(stream));
      if (status !== 429 && status < 500) throw error;
      const retryAfter = parseRetryAfter(headers.get("retry-after"));
      return {
        delivered,
        error,
        streaming: true,
        ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter * 1000 }),
      };
    }
    if (!(headers.get("content-type") ?? "").includes("text/event-stream")) {
      const page = jsonPage((await readAnswer(stream)).text);
      if (f.transport === "sse") {
        throw new AgentrunsError("the server does not stream events (no text/event-stream answer)", {
          code: "sse_unsupported",
        });
      }
      for (const event of page) if (f.cursor.accept(event)) yield event;
      return { delivered: page.length, streaming: false };
    }
    for await (const event of readEvents(stream, f.idleTimeoutMs)) {
      if (!f.cursor.accept(event)) continue;
      delivered += 1;
      yield event;
      if (f.cursor.ended) break;
    }
    return { delivered, streaming: true };
  } catch (failure) {
    if (f.signal?.aborted) throw f.signal.reason;
    if (failure instanceof AgentrunsError && !(failure instanceof ConnectionError)) throw failure;
    const error = failure instanceof ConnectionError ? failure : connectionError(failure, `events of run ${f.runId}`);
    return { delivered, error, streaming: true };
  } finally {
    stream?.close(); // also when the caller stops iterating early: the connection is released
  }
}

/** The run events of an open SSE response until it ends; a connection silent for `idleMs` is closed,
 * which makes the read fail as a dropped connection does. */
async function* readEvents(stream: OpenStream, idleMs: number): AsyncGenerator<RunEvent, void, undefined> {
  const body = stream.response.body;
  if (body === null) return;
  const reader = body.getReader();
  const text = new TextDecoder();
  const lines = new LineSplitter();
  const sse = new SSEDecoder();
  let silence: ReturnType<typeof setTimeout> | undefined;
  try {
    for (;;) {
      // Armed only while waiting for the network, not while the caller holds an event.
      silence = setTimeout(() => stream.close(new Error(`no data for ${idleMs} ms`)), idleMs);
      const chunk = await reader.read();
      clearTimeout(silence);
      if (chunk.done) return;
      for (const line of lines.push(text.decode(chunk.value, { stream: true }))) {
        const message = sse.feed(line);
        const event = message === undefined ? undefined : eventFromSSE(message);
        if (event !== undefined) yield event;
      }
    }
  } finally {
    clearTimeout(silence);
    reader.releaseLock();
  }
}

/** The events of a JSON /events answer (none if the body is not one). */
function jsonPage(text: string): RunEvent[] {
  try {
    const rows: unknown = JSON.parse(text).data;
    return Array.isArray(rows) ? rows.map((row) => normalizeEvent(row as Record<string, unknown>)) : [];
  } catch {
    return [];
  }
}

/** Poll /events until the terminal status event (or the run is terminal and no event is left). */
async function* poll(f: Follow): AsyncGenerator<RunEvent, void, undefined> {
  let idle = f.pollIntervalMs;
  while (!f.cursor.ended) {
    let fresh = 0;
    for (const event of await f.runs.eventsPage(f.runId, { afterSeq: f.cursor.last, signal: f.signal })) {
      if (!f.cursor.accept(event)) continue;
      fresh += 1;
      yield event;
    }
    if (f.cursor.ended) return;
    if (fresh) {
      idle = f.pollIntervalMs;
      continue;
    }
    // Nothing new: the terminal event may have been compacted away, so ask the run itself. Its events
    // are committed with its status, so the log read after seeing it terminal is complete.
    if (isTerminal((await f.runs.get(f.runId, { signal: f.signal })).status)) {
      yield* emitRest(f);
      return;
    }
    await sleep(idle, f.signal);
    idle = Math.min(MAX_POLL_INTERVAL_MS, idle * 1.5);
  }
}

/** Deliver what the log holds after the cursor (the run is over). */
async function* emitRest(f: Follow): AsyncGenerator<RunEvent, void, undefined> {
  for (const event of await f.runs.events(f.runId, { afterSeq: f.cursor.last, signal: f.signal })) {
    if (f.cursor.accept(event)) yield event;
  }
}
