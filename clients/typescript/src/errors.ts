/**
 * The SDK's errors: one AgentrunsError family built from the API's one error body,
 * `{"error": {"code", "message", "details"}, "request_id"}`, with a subclass per kind of failure.
 */
import type { AgentRun } from "./types.js";

/** What an AgentrunsError carries besides its message. */
export interface AgentrunsErrorInit {
  /** Machine-readable, e.g. `validation_error`, `not_found`, `connection_failed`. */
  code?: string;
  /** The HTTP status; undefined when no response came (ConnectionError). */
  status?: number;
  /** The request's id: the server's `request_id`, else the X-Request-Id the SDK sent. */
  requestId?: string;
  /** Extra detail from the server, e.g. `{"fields": {"prompt": ["required"]}}` on a 422. */
  details?: Record<string, unknown>;
  /** The response headers, names in lower case. */
  headers?: Record<string, string>;
  /** The underlying error (a fetch failure), if any. */
  cause?: unknown;
}

/** Base of every error the SDK throws (except an AbortSignal's own reason, which is rethrown as is). */
export class AgentrunsError extends Error {
  override name = "AgentrunsError";
  /** Machine-readable error code, e.g. `validation_error`. */
  readonly code: string;
  /** HTTP status, or undefined when no response came. */
  readonly status: number | undefined;
  /** The request id to quote when reporting a problem (also in the server's logs). */
  readonly requestId: string | undefined;
  /** Extra detail from the server's error body. */
  readonly details: Record<string, unknown>;
  /** Response headers (lower-case names); empty without a response. */
  readonly headers: Record<string, string>;

  constructor(message: string, init: AgentrunsErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code ?? "error";
    this.status = init.status;
    this.requestId = init.requestId;
    this.details = init.details ?? {};
    this.headers = init.headers ?? {};
  }

  /** `Name: message (code=..., status=..., request_id=...)`, as the Python SDK prints errors. */
  override toString(): string {
    const extra = [`code=${this.code}`];
    if (this.status !== undefined) extra.push(`status=${this.status}`);
    if (this.requestId) extra.push(`request_id=${this.requestId}`);
    return `${this.name}: ${this.message} (${extra.join(", ")})`;
  }
}

/** 400, 405, 413, 415: the request itself is malformed. */
export class BadRequestError extends AgentrunsError {
  override name = "BadRequestError";
}

/** 401: missing, bad or revoked API key. */
export class AuthenticationError extends AgentrunsError {
  override name = "AuthenticationError";
}

/** 403: the key may not do this. */
export class PermissionDeniedError extends AgentrunsError {
  override name = "PermissionDeniedError";
}

/** 404: no such object in the caller's tenant. */
export class NotFoundError extends AgentrunsError {
  override name = "NotFoundError";
}

/** 409: e.g. cancelling a finished run, deleting a busy device, an Idempotency-Key still in use. */
export class ConflictError extends AgentrunsError {
  override name = "ConflictError";
}

/** 422: invalid fields (see `fields`), or `idempotency_key_reused` with a different payload. */
export class ValidationError extends AgentrunsError {
  override name = "ValidationError";

  /** Per-field messages, e.g. `{"prompt": ["required"]}`. */
  get fields(): Record<string, string[]> {
    const fields = this.details["fields"];
    return typeof fields === "object" && fields !== null ? (fields as Record<string, string[]>) : {};
  }
}

/** 429: too many requests; `retryAfter` says how long the server asked to wait. */
export class RateLimitError extends AgentrunsError {
  override name = "RateLimitError";

  /** The Retry-After header in seconds, or undefined. */
  get retryAfter(): number | undefined {
    return parseRetryAfter(this.headers["retry-after"]);
  }
}

/** 5xx, or an answer that is not the API's JSON: the server (or a proxy in front of it) failed. */
export class ServerError extends AgentrunsError {
  override name = "ServerError";
}

/** No usable HTTP response: connection refused or dropped, timeout, DNS failure. */
export class ConnectionError extends AgentrunsError {
  override name = "ConnectionError";
}

/** The run had not finished when the caller's wait limit passed; `run` is its last known state. */
export class WaitTimeoutError extends AgentrunsError {
  override name = "WaitTimeoutError";
  /** The run as last seen (still queued or running). */
  readonly run: AgentRun;

  constructor(run: AgentRun, timeoutMs: number) {
    super(`run ${run.id} still ${run.status} after ${timeoutMs / 1000}s`, { code: "wait_timeout" });
    this.run = run;
  }
}

const BY_STATUS: Record<number, typeof AgentrunsError> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  405: BadRequestError,
  409: ConflictError,
  413: BadRequestError,
  415: BadRequestError,
  422: ValidationError,
  429: RateLimitError,
};

/** Retry-After as seconds (delta-seconds or an HTTP date); undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed);
  // Date.parse is lenient ("-3" is a year): only text that names a day or month is taken for a date.
  const when = /[a-z]/i.test(trimmed) ? Date.parse(trimmed) : Number.NaN;
  return Number.isNaN(when) ? undefined : Math.max(0, (when - now) / 1000);
}

/** An HTTP answer, body read: what errors are built from. */
export interface Answer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  readonly text: string;
}

function lowerCaseHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name.toLowerCase()] = value;
  });
  return out;
}

function jsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The typed error for a >= 400 answer; copes with bodies that are not ours (a proxy's HTML page). */
export function errorFromAnswer(answer: Answer, sentRequestId?: string): AgentrunsError {
  const body = jsonOrUndefined(answer.text);
  const error = isObject(body) && isObject(body["error"]) ? body["error"] : undefined;
  const bodyRequestId = isObject(body) && typeof body["request_id"] === "string" ? body["request_id"] : undefined;
  const requestId = bodyRequestId || answer.headers.get("x-request-id") || sentRequestId;
  let code: string;
  let message: string;
  let details: Record<string, unknown> = {};
  if (error !== undefined) {
    code = typeof error["code"] === "string" && error["code"] ? error["code"] : "error";
    message = typeof error["message"] === "string" ? error["message"] : "";
    if (isObject(error["details"])) details = error["details"];
  } else {
    code = `http_${answer.status}`;
    message = `HTTP ${answer.status}${answer.statusText ? ` ${answer.statusText}` : ""}`;
    const snippet = answer.text
      .trim()
      .replace(/\s*\n\s*/g, " ")
      .slice(0, 200);
    if (snippet) message += `: ${snippet}`;
  }
  const ErrorClass = BY_STATUS[answer.status] ?? (answer.status >= 500 ? ServerError : AgentrunsError);
  return new ErrorClass(message, {
    code,
    status: answer.status,
    ...(requestId ? { requestId } : {}),
    details,
    headers: lowerCaseHeaders(answer.headers),
  });
}

/** Wrap a fetch failure (no response) as a ConnectionError naming what was asked. */
export function connectionError(cause: unknown, what: string, requestId?: string): ConnectionError {
  const reason = describeFailure(cause);
  return new ConnectionError(`${reason} (${what})`, {
    code: "connection_failed",
    ...(requestId ? { requestId } : {}),
    cause,
  });
}

/** `fetch failed: connect ECONNREFUSED 127.0.0.1:1` rather than undici's bare `fetch failed`. */
function describeFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message || error.cause.name}` : "";
  return `${error.message || error.name}${cause}`;
}
