/** `client.agentRuns`: create, run, get, wait, page, list, cancel, events, eventsPage, stream
 * (mirrors agentruns/_sdk_resources.py). */
import { WaitTimeoutError } from "./errors.js";
import type { Http, QueryValue } from "./http.js";
import { newIdempotencyKey } from "./ids.js";
import { RunList } from "./pagination.js";
import { type StreamOptions, streamEvents } from "./stream.js";
import { normalizeEvent } from "./sse.js";
import type { AgentRun, RunCreateParams, RunEvent, RunListParams, RunPage } from "./types.js";
import { isTerminal } from "./vocabulary.js";

const RUNS = "/api/v1/agent-runs";
/** A create with `wait: true` lets the server hold the request this long before answering. */
const SERVER_WAIT_DEFAULT_SECONDS = 60;
/** The server's longest long-poll. */
const DEFAULT_POLL_WAIT_SECONDS = 60;

/** Options every method takes. */
export interface RequestOptions {
  /** Aborting it stops the call (and its retries): the promise rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

/** Options of `create`. */
export interface CreateOptions extends RequestOptions {
  /** Makes a retried create return the first run instead of making a second (generated when omitted;
   * the same key goes with every retry of this call). */
  idempotencyKey?: string;
}

/** Options of `wait`. */
export interface WaitOptions extends RequestOptions {
  /** Give up after this many ms with a WaitTimeoutError carrying the run. Default: no limit. */
  timeoutMs?: number;
  /** Seconds the server may hold each long-poll (1 to 600). Default 60. */
  pollWaitSeconds?: number;
}

/** Options of `run`: `timeoutMs` counts from the call, create included. */
export interface RunOptions extends CreateOptions, WaitOptions {}

/** Options of `events` and `eventsPage`. */
export interface EventsOptions extends RequestOptions {
  /** Events after this seq. Default 0: from the start. */
  afterSeq?: number;
  /** Page size (1 to 1000). */
  limit?: number;
}

function runPath(runId: string, tail = ""): string {
  return `${RUNS}/${encodeURIComponent(runId)}${tail}`;
}

function listQuery(params: RunListParams): Record<string, QueryValue> {
  const { metadata, ...filters } = params;
  const query: Record<string, QueryValue> = { ...filters };
  for (const [key, value] of Object.entries(metadata ?? {})) query[`metadata[${key}]`] = value;
  return query;
}

/** The runs of the client's tenant. */
export class AgentRuns {
  /** @internal */
  constructor(private readonly http: Http) {}

  /** Create a run (status queued, unless `wait` let it finish). A fresh Idempotency-Key is generated
   * when none is given, and the same key goes with every retry, so a retried create never makes a
   * second run. */
  async create(params: RunCreateParams, options: CreateOptions = {}): Promise<AgentRun> {
    const waitSeconds = params.wait === true ? SERVER_WAIT_DEFAULT_SECONDS : Number(params.wait || 0);
    return this.http.data<AgentRun>({
      method: "POST",
      path: RUNS,
      body: params,
      headers: { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() },
      timeoutMs: this.http.config.timeoutMs + waitSeconds * 1000,
      retry: "always",
      signal: options.signal,
    });
  }

  /** Create a run and wait until it ends: resolves with the finished run (succeeded, failed or
   * canceled), or rejects with WaitTimeoutError after `timeoutMs`. Aborting `signal` stops waiting;
   * the run goes on (`cancel` stops it). */
  async run(params: RunCreateParams, options: RunOptions = {}): Promise<AgentRun> {
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    const created = await this.create(params, options);
    if (isTerminal(created.status)) return created;
    return this.waitUntil(created.id, deadline, options);
  }

  /** The full run; `wait` (seconds, at most 600) holds the answer until it is terminal. */
  async get(runId: string, options: RequestOptions & { wait?: number } = {}): Promise<AgentRun> {
    const wait = options.wait ? Math.floor(options.wait) : undefined;
    return this.http.data<AgentRun>({
      method: "GET",
      path: runPath(runId),
      query: { wait },
      timeoutMs: this.http.config.timeoutMs + (wait ?? 0) * 1000,
      retry: "always",
      signal: options.signal,
    });
  }

  /** Long-poll until the run is terminal; WaitTimeoutError (carrying the run) after `timeoutMs`. */
  async wait(runId: string, options: WaitOptions = {}): Promise<AgentRun> {
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    return this.waitUntil(runId, deadline, options);
  }

  private async waitUntil(runId: string, deadline: number | undefined, options: WaitOptions): Promise<AgentRun> {
    const pollWait = options.pollWaitSeconds ?? DEFAULT_POLL_WAIT_SECONDS;
    for (;;) {
      const left = deadline === undefined ? undefined : deadline - Date.now();
      const step = left === undefined ? pollWait : Math.max(0, Math.min(pollWait, Math.ceil(left / 1000)));
      const run = await this.get(runId, { wait: step, signal: options.signal });
      if (isTerminal(run.status)) return run;
      if (deadline !== undefined && Date.now() >= deadline) throw new WaitTimeoutError(run, options.timeoutMs ?? 0);
    }
  }

  /** One page of runs, newest first: `{data, next_cursor}`. */
  async page(params: RunListParams = {}, options: RequestOptions = {}): Promise<RunPage> {
    const call = {
      method: "GET",
      path: RUNS,
      query: listQuery(params),
      retry: "always",
      signal: options.signal,
    } as const;
    return this.http.envelope<RunPage>(call, await this.http.send(call));
  }

  /** Every matching run, newest first: `for await (const run of client.agentRuns.list({...}))`.
   * It follows next_cursor (`limit` is the page size, 1 to 100); `.pages()` yields whole pages. */
  list(params: RunListParams = {}, options: RequestOptions = {}): RunList {
    return new RunList(
      (cursor) => this.page({ ...params, ...(cursor === undefined ? {} : { cursor }) }, options),
      params.cursor,
    );
  }

  /** Cancel: a queued run ends at once; a running one gets `cancel_requested` and its worker kills it.
   * ConflictError (409) if it already finished. */
  async cancel(runId: string, options: RequestOptions = {}): Promise<AgentRun> {
    // Cancelling twice changes nothing, yet resend only when the first surely did not arrive: a
    // resent cancel of a run that finished meanwhile would turn into a confusing 409.
    return this.http.data<AgentRun>({
      method: "POST",
      path: runPath(runId, "/cancel"),
      retry: "safe",
      signal: options.signal,
    });
  }

  /** One page of the event log after `afterSeq` (default page size 500). */
  async eventsPage(runId: string, options: EventsOptions = {}): Promise<RunEvent[]> {
    const rows = await this.http.data<Record<string, unknown>[]>({
      method: "GET",
      path: runPath(runId, "/events"),
      query: { after_seq: options.afterSeq ?? 0, limit: options.limit ?? 500 },
      retry: "always",
      signal: options.signal,
    });
    return rows.map(normalizeEvent);
  }

  /** The whole event log after `afterSeq`, page by page (default page size 1000). */
  async events(runId: string, options: EventsOptions = {}): Promise<RunEvent[]> {
    const limit = options.limit ?? 1000;
    const all: RunEvent[] = [];
    for (let afterSeq = options.afterSeq ?? 0; ;) {
      const rows = await this.eventsPage(runId, { afterSeq, limit, signal: options.signal });
      all.push(...rows);
      if (rows.length < limit) return all;
      afterSeq = rows[rows.length - 1]!.seq;
    }
  }

  /** The run's events, live, until its terminal status event: `for await (const e of stream(id))`.
   * A dropped SSE connection is resumed with Last-Event-ID; a server or proxy that does not stream is
   * polled instead (`transport: "auto"`). Leave the loop early, or abort `signal`, to close it. */
  stream(runId: string, options: StreamOptions = {}): AsyncGenerator<RunEvent, void, undefined> {
    return streamEvents(this, this.http, runId, options);
  }
}
