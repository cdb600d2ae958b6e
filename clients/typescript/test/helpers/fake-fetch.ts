/** A scripted stand-in for fetch: each request takes the next reply, and every request is recorded. */
import { Agentruns, type ClientOptions } from "../../src/index.js";

/** One request as the SDK sent it. */
export interface Recorded {
  method: string;
  url: URL;
  headers: Headers;
  body: string | undefined;
  /** When it was sent (Date.now()). */
  at: number;
  signal: AbortSignal | undefined;
}

/** A canned response, a failure to throw (as fetch does on a network error), or a function of the request. */
export type Reply = Response | Error | ((request: Recorded) => Response | Promise<Response>);

/** Records requests and answers them with the queued replies, then with `fallback` (404 by default). */
export class FakeFetch {
  readonly requests: Recorded[] = [];
  private readonly replies: Reply[];
  fallback: (request: Recorded) => Response = () => errorResponse(404, "not_found", "no reply scripted");

  constructor(...replies: Reply[]) {
    this.replies = replies;
  }

  /** Queue more replies. */
  queue(...replies: Reply[]): this {
    this.replies.push(...replies);
    return this;
  }

  readonly fetch: typeof fetch = async (input, init) => {
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
    const request: Recorded = {
      method: init?.method ?? "GET",
      url,
      headers: new Headers(init?.headers),
      body: typeof init?.body === "string" ? init.body : undefined,
      at: Date.now(),
      signal: init?.signal ?? undefined,
    };
    this.requests.push(request);
    if (request.signal?.aborted) throw request.signal.reason;
    const reply = this.replies.shift() ?? this.fallback;
    if (reply instanceof Error) throw reply;
    return typeof reply === "function" ? reply(request) : reply;
  };

  /** The values of one header across all requests. */
  header(name: string): (string | null)[] {
    return this.requests.map((r) => r.headers.get(name));
  }
}

/** A JSON response. */
export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

/** The API's error body. */
export function errorResponse(
  status: number,
  code: string,
  message: string,
  options: { requestId?: string; details?: Record<string, unknown>; headers?: Record<string, string> } = {},
): Response {
  const body = {
    error: { code, message, details: options.details ?? {} },
    request_id: options.requestId ?? "req-from-body",
  };
  return jsonResponse(status, body, options.headers);
}

/** A run as the server sends it. */
export function runBody(id: string, status: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id,
    status,
    target_kind: "sandbox",
    target_id: "box",
    provider: "custom",
    prompt: "p",
    metadata: {},
    created_at: "2026-01-01T00:00:00+00:00",
    finished_at: null,
    started_at: null,
    updated_at: "2026-01-01T00:00:00+00:00",
    model: null,
    cwd: "/w",
    timeout: 60,
    command: "true",
    output: null,
    stdout: null,
    stderr: null,
    stdout_truncated: false,
    stderr_truncated: false,
    exit_code: null,
    error: null,
    usage: null,
    cost_usd: null,
    session_id: null,
    cancel_requested: false,
    request_id: null,
    ...extra,
  };
}

/** `{"data": run}`. */
export function runResponse(
  id: string,
  status: string,
  extra: Record<string, unknown> = {},
  httpStatus = 200,
): Response {
  return jsonResponse(httpStatus, { data: runBody(id, status, extra) });
}

/** A fetch failure like undici's for a refused connection (the request never left). */
export function refused(): TypeError {
  const cause = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" });
  return new TypeError("fetch failed", { cause });
}

/** A fetch failure like undici's for a connection dropped after the request was sent. */
export function dropped(): TypeError {
  const cause = Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" });
  return new TypeError("fetch failed", { cause });
}

/** One SSE frame of a run event, as the server writes it. */
export function frame(seq: number, type: string, data: unknown): string {
  return `id: ${seq}\nevent: ${type}\ndata: ${JSON.stringify({ seq, type, data, at: "2026-01-01T00:00:00+00:00" })}\n\n`;
}

/**
 * An SSE response whose body sends `chunks` in order; an Error chunk breaks the connection there,
 * and `hang` keeps it open afterwards (until the request is aborted, which errors the body as fetch does).
 */
export function sseReply(
  chunks: (string | Error)[],
  options: { hang?: boolean } = {},
): (request: Recorded) => Response {
  return (request) => {
    const encoder = new TextEncoder();
    const queue = [...chunks];
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        request.signal?.addEventListener("abort", () => {
          try {
            controller.error(request.signal?.reason);
          } catch {
            // already closed
          }
        });
      },
      // One chunk per read, so the reader sees every chunk before an Error (erroring a stream drops
      // what is still queued in it).
      pull(controller) {
        const chunk = queue.shift();
        if (chunk instanceof Error) controller.error(chunk);
        else if (chunk !== undefined) controller.enqueue(encoder.encode(chunk));
        else if (!options.hang) controller.close();
        else return new Promise<void>(() => {}); // stays open until aborted
        return undefined;
      },
    });
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  };
}

/** A client on the fake, retrying fast. */
export function clientOn(fake: FakeFetch, options: ClientOptions = {}): Agentruns {
  return new Agentruns({
    baseUrl: "http://api.test",
    apiKey: "ark_test",
    backoffBaseMs: 1,
    fetch: fake.fetch,
    ...options,
  });
}
