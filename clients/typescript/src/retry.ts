/**
 * The retry policy, as pure functions (mirrors agentruns/_sdk_retry.py):
 * - "always" calls (reads, and creates, which carry an Idempotency-Key) are resent after any
 *   connection failure, a 5xx, a 429 or a 409 `idempotency_key_in_use`;
 * - "safe" calls (cancel, device writes) only after a 429, or a failure that surely never reached
 *   the server (connection refused, DNS), because resending them could act twice.
 * Every resend is the same logical request: same X-Request-Id, same Idempotency-Key.
 */

/** Which failures a call may be resent after (see the module comment). */
export type RetryMode = "always" | "safe";

/** Exponential backoff stops growing here. */
export const MAX_BACKOFF_MS = 8_000;
/** A server asking for a longer pause than this is not waited on for longer. */
export const MAX_RETRY_AFTER_MS = 60_000;

// Error codes (Node's, and undici's) of a connection that never carried the request.
const NOT_SENT_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "UND_ERR_CONNECT_TIMEOUT",
]);

/**
 * Milliseconds to sleep before retry number `attempt` (0-based): the server's Retry-After if it gave
 * one (capped), else capped exponential backoff with "equal jitter", so a fleet of clients does not
 * retry in lockstep.
 */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS) + random() * 100;
  const ceiling = Math.min(MAX_BACKOFF_MS, baseMs * 2 ** attempt);
  return ceiling / 2 + random() * (ceiling / 2);
}

/** May an HTTP error answer be resent? 429 always (refused before any work); 5xx and a create still
 * in progress under the same key only for "always" calls. */
export function mayResendAnswer(mode: RetryMode, status: number, code: string): boolean {
  if (status === 429) return true;
  return mode === "always" && (status >= 500 || code === "idempotency_key_in_use");
}

/** May a call be resent after fetch failed without a response? */
export function mayResendFailure(mode: RetryMode, error: unknown): boolean {
  return mode === "always" || neverSent(error);
}

/** Did the request surely never reach the server? Only known connect-phase error codes say so;
 * browsers hide the cause, so there a failure counts as possibly sent. */
export function neverSent(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && NOT_SENT_CODES.has(code)) return true;
    // Node's happy-eyeballs connect reports every address's failure in an AggregateError.
    if (e instanceof AggregateError && e.errors.length > 0 && e.errors.every((inner) => neverSent(inner))) {
      return true;
    }
  }
  return false;
}
