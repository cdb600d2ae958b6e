/**
 * The one place the SDK talks HTTP: builds requests, sends them with the retry policy (retry.ts),
 * decodes the API's `{"data": ...}` envelope and opens event streams. Only `fetch` is used, so the
 * SDK runs on Node 18+, browsers and edge runtimes.
 */
import { linkSignals, sleep } from "./abort.js";
import {
  type Answer,
  AgentrunsError,
  ServerError,
  connectionError,
  errorFromAnswer,
  parseRetryAfter,
} from "./errors.js";
import { newRequestId } from "./ids.js";
import { type RetryMode, backoffDelay, mayResendAnswer, mayResendFailure } from "./retry.js";

/** A query string value; undefined ones are left out. */
export type QueryValue = string | number | boolean | Date | undefined;

/** How the client reaches the API; shared by every resource of one client. */
export interface HttpConfig {
  /** Without a trailing slash or the /api/v1 prefix. */
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly backoffBaseMs: number;
  readonly fetch: typeof fetch;
  /** Sent with every request (after the SDK's own, so they may override them). */
  readonly headers: Record<string, string>;
}

/** One logical request; every attempt sends it identically (same X-Request-Id, same Idempotency-Key). */
export interface Call {
  readonly method: "GET" | "POST" | "PATCH" | "DELETE";
  /** Starting with /api/v1. */
  readonly path: string;
  readonly query?: Record<string, QueryValue>;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
  /** Whole attempt, body included; defaults to the client's timeout. */
  readonly timeoutMs?: number;
  readonly retry: RetryMode;
  readonly signal?: AbortSignal | undefined;
}

/** An open streamed response and how to let it go. */
export interface OpenStream {
  readonly response: Response;
  /** Abort the request (and so the body's reads, which fail with `reason`). Idempotent. */
  close(reason?: unknown): void;
}

function queryValue(value: Exclude<QueryValue, undefined>): string {
  return value instanceof Date ? value.toISOString() : String(value);
}

function isNode(): boolean {
  const process = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof process?.versions?.node === "string";
}

/** Sends the SDK's calls. */
export class Http {
  constructor(
    readonly config: HttpConfig,
    private readonly userAgent: string,
  ) {}

  /** The absolute URL of `path` with `query` (undefined values left out). */
  url(path: string, query: Record<string, QueryValue> = {}): string {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) params.append(name, queryValue(value));
    }
    const search = params.toString();
    return `${this.config.baseUrl}${path}${search ? `?${search}` : ""}`;
  }

  /** The headers of every attempt of `call`, with its one X-Request-Id. */
  private headersFor(call: Call): Record<string, string> {
    const headers: Record<string, string> = { Accept: "application/json", "X-Request-Id": newRequestId() };
    // Browsers forbid setting User-Agent (and a custom one would need CORS approval): Node only.
    if (isNode()) headers["User-Agent"] = this.userAgent;
    if (this.config.apiKey) headers["Authorization"] = `Bearer ${this.config.apiKey}`;
    if (call.body !== undefined) headers["Content-Type"] = "application/json";
    return { ...headers, ...this.config.headers, ...call.headers };
  }

  /** Send `call`, resending it while the policy allows; the first successful answer (< 400). */
  async send(call: Call): Promise<Answer> {
    const headers = this.headersFor(call);
    const requestId = headers["X-Request-Id"];
    const what = `${call.method} ${call.path}`;
    for (let attempt = 0; ; attempt++) {
      let error: AgentrunsError;
      let resendable: boolean;
      let retryAfterMs: number | undefined;
      try {
        const answer = await this.attempt(call, headers);
        if (answer.status < 400) return answer;
        error = errorFromAnswer(answer, requestId);
        resendable = mayResendAnswer(call.retry, answer.status, error.code);
        const retryAfter = parseRetryAfter(answer.headers.get("retry-after"));
        retryAfterMs = retryAfter === undefined ? undefined : retryAfter * 1000;
      } catch (failure) {
        if (call.signal?.aborted) throw call.signal.reason; // the caller's abort: no retry
        error = connectionError(failure, what, requestId);
        resendable = mayResendFailure(call.retry, failure);
      }
      if (!resendable || attempt >= this.config.maxRetries) throw error;
      await sleep(backoffDelay(attempt, this.config.backoffBaseMs, retryAfterMs), call.signal);
    }
  }

  /** One attempt: the answer with its body read, all within the call's timeout. */
  private async attempt(call: Call, headers: Record<string, string>): Promise<Answer> {
    const timeoutMs = call.timeoutMs ?? this.config.timeoutMs;
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    const linked = linkSignals(call.signal, timeout.signal);
    try {
      const response = await this.config.fetch(this.url(call.path, call.query), {
        method: call.method,
        headers,
        signal: linked.signal,
        ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
      });
      const text = await response.text();
      return { status: response.status, statusText: response.statusText, headers: response.headers, text };
    } catch (failure) {
      // Name the timeout rather than fetch's generic AbortError.
      if (timeout.signal.aborted && !call.signal?.aborted) throw timeout.signal.reason;
      throw failure;
    } finally {
      clearTimeout(timer);
      linked.dispose();
    }
  }

  /** `send`, then the envelope's `data` (undefined for 204). */
  async data<T>(call: Call): Promise<T> {
    const answer = await this.send(call);
    if (answer.status === 204 || answer.text === "") return undefined as T;
    return this.envelope<{ data: T }>(call, answer).data;
  }

  /** The JSON object of a successful answer; ServerError when it is not an envelope (a proxy's page). */
  envelope<T extends { data: unknown }>(call: Call, answer: Answer): T {
    let body: unknown;
    try {
      body = JSON.parse(answer.text);
    } catch {
      body = undefined;
    }
    if (typeof body !== "object" || body === null || !("data" in body)) {
      throw new ServerError(`unexpected response body from ${call.method} ${call.path}`, {
        code: "bad_response",
        status: answer.status,
        ...(answer.headers.get("x-request-id") ? { requestId: answer.headers.get("x-request-id")! } : {}),
      });
    }
    return body as T;
  }

  /**
   * Open a streamed response (one attempt, no retry: the stream's own loop decides). The client's
   * timeout covers only the wait for the response head; the body may take as long as it needs.
   */
  async open(call: Call): Promise<OpenStream> {
    const headers = this.headersFor(call);
    const timeoutMs = call.timeoutMs ?? this.config.timeoutMs;
    const linked = linkSignals(call.signal);
    const timer = setTimeout(() => linked.abort(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    const close = (reason: unknown = new Error("stream closed")) => {
      clearTimeout(timer);
      linked.abort(reason);
      linked.dispose();
    };
    try {
      const response = await this.config.fetch(this.url(call.path, call.query), {
        method: call.method,
        headers,
        signal: linked.signal,
      });
      clearTimeout(timer);
      return { response, close };
    } catch (failure) {
      close();
      if (call.signal?.aborted) throw call.signal.reason;
      throw connectionError(failure, `${call.method} ${call.path}`, headers["X-Request-Id"]);
    }
  }
}

/** Read a streamed response's body as text (for an error or a JSON answer), then close it. */
export async function readAnswer(stream: OpenStream): Promise<Answer> {
  try {
    const text = await stream.response.text();
    const { status, statusText, headers } = stream.response;
    return { status, statusText, headers, text };
  } finally {
    stream.close();
  }
}
