/**
 * Verifying (and signing) the service's webhook events: the Agentruns-Signature scheme, Stripe's.
 * Mirrors agentruns/webhooks.py; clients/webhook-signature-vectors.json holds every SDK to the same
 * answers.
 *
 *     Agentruns-Signature: t=1700000000,v1=5e138d...[,v1=...]
 *     Agentruns-Event-Id: evt_...
 *
 * `v1` is the lowercase hex HMAC-SHA256 of `"{t}." + body`, keyed with the endpoint's whole `whsec_...`
 * secret. During a secret rotation there is one `v1` per secret; any one matching is enough.
 *
 * The HMAC is the platform's Web Crypto (`globalThis.crypto.subtle`), the one every runtime the SDK
 * targets shares: browsers (secure contexts), Deno, Bun, Cloudflare Workers and Node >= 19 (Node 18
 * only with --experimental-global-webcrypto). It is asynchronous, so verifyWebhook and signWebhook
 * return promises.
 */
import { AgentrunsError } from "./errors.js";
import type { AgentRun, Timestamp } from "./types.js";

/** The header carrying `t=<unix seconds>,v1=<hex>` (in Node: `req.headers["agentruns-signature"]`). */
export const WEBHOOK_SIGNATURE_HEADER = "Agentruns-Signature";
/** The header carrying the event's id (also the body's `id`). */
export const WEBHOOK_EVENT_ID_HEADER = "Agentruns-Event-Id";
/** Seconds a signature's timestamp may be from the receiver's clock, either way. */
export const DEFAULT_WEBHOOK_TOLERANCE = 300;

/** Why an event was refused, in the order checked. */
export type WebhookVerificationErrorCode =
  | "malformed_header"
  | "timestamp_outside_tolerance"
  | "signature_mismatch"
  | "malformed_body";

/** An event that must not be trusted: answer it with a 400. */
export class WebhookVerificationError extends AgentrunsError {
  override name = "WebhookVerificationError";
  override readonly code: WebhookVerificationErrorCode;

  constructor(code: WebhookVerificationErrorCode, message: string) {
    super(message, { code });
    this.code = code;
  }
}

/** A webhook event, as POSTed. */
export interface WebhookEvent<Data = AgentRun> {
  /** `evt_...`, as in the Agentruns-Event-Id header. Delivery is at least once: skip an id seen before. */
  id: string;
  /** e.g. `run.succeeded`. */
  type: string;
  created_at: Timestamp;
  /** For `run.*` events, the run as GET /api/v1/agent-runs/{id} returns it. */
  data: Data;
}

export interface VerifyWebhookOptions {
  /** Seconds either way; default DEFAULT_WEBHOOK_TOLERANCE (300). */
  tolerance?: number;
  /** The current time in unix seconds (not milliseconds); default the clock. For tests. */
  now?: number;
}

const encoder = new TextEncoder();

/**
 * The event in `body` once `signatureHeader` proves that the holder of `secret` sent it within the
 * tolerance. `body` is the request's raw body (a string is taken as its UTF-8 encoding): JSON parsed
 * and re-serialized by a framework no longer has the bytes that were signed. Rejects with a
 * WebhookVerificationError (`code`: malformed_header, timestamp_outside_tolerance, signature_mismatch,
 * malformed_body, checked in that order); with a TypeError for an empty secret, and with an Error in
 * a runtime without Web Crypto.
 */
export async function verifyWebhook<Data = AgentRun>(
  body: string | Uint8Array,
  signatureHeader: string | readonly string[] | null | undefined,
  secret: string,
  options: VerifyWebhookOptions = {},
): Promise<WebhookEvent<Data>> {
  // Configuration mistakes (an unset variable, an old runtime), not bad requests: no
  // WebhookVerificationError, and found on the first event, whatever it holds.
  if (!secret) throw new TypeError("verifyWebhook needs the endpoint's webhook secret; got an empty one");
  const subtle = webCrypto("verifyWebhook");
  const { timestamp, signatures } = parseHeader(signatureHeader);

  const tolerance = options.tolerance ?? DEFAULT_WEBHOOK_TOLERANCE;
  const age = (options.now ?? Date.now() / 1000) - Number(timestamp);
  if (!(Math.abs(age) <= tolerance)) {
    const when = `${Math.abs(age).toFixed(0)} s ${age > 0 ? "ago" : "ahead of this clock"}`;
    throw new WebhookVerificationError(
      "timestamp_outside_tolerance",
      `the event was signed at t=${timestamp}, ${when}: outside the ${tolerance} s tolerance ` +
        "(a replayed event, or a clock that is off)",
    );
  }

  // Copied before the first await: the bytes parsed below are the bytes verified, even if the caller
  // reuses its buffer meanwhile.
  const { message, signedBody } = signedPayload(timestamp, body);
  const key = await hmacKey(subtle, secret, "verify");
  let matched = false;
  for (const candidate of signatures) {
    const mac = decodeSignature(candidate);
    // subtle.verify compares in constant time; a v1 that is not 64 lowercase hex digits matches nothing.
    if (mac && (await subtle.verify("HMAC", key, mac, message))) {
      matched = true;
      break;
    }
  }
  if (!matched) {
    throw new WebhookVerificationError(
      "signature_mismatch",
      "no v1 signature matches: the secret is not this endpoint's, or the body was changed " +
        "(verify the raw bytes as received, before any JSON parsing)",
    );
  }

  let event: unknown;
  try {
    event = JSON.parse(typeof body === "string" ? body : strictUtf8(signedBody));
  } catch (error) {
    throw new WebhookVerificationError("malformed_body", `the signed body is not JSON: ${String(error)}`);
  }
  if (!isEvent(event)) {
    throw new WebhookVerificationError(
      "malformed_body",
      "the signed body is not an event (an object with id and type)",
    );
  }
  return event as WebhookEvent<Data>;
}

/**
 * The Agentruns-Signature value for `body` sent at `timestamp` (unix seconds): one v1 per secret, in
 * the order given (during a rotation, the new secret and the old). For tests of a receiver.
 */
export async function signWebhook(
  body: string | Uint8Array,
  secrets: string | readonly string[],
  timestamp: number,
): Promise<string> {
  const list = typeof secrets === "string" ? [secrets] : secrets;
  if (list.length === 0 || list.some((s) => !s)) {
    throw new TypeError("signWebhook needs at least one non-empty secret");
  }
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new TypeError(`timestamp must be unix seconds as a non-negative integer, not ${timestamp}`);
  }
  const subtle = webCrypto("signWebhook");
  const { message } = signedPayload(String(timestamp), body);
  const items = [`t=${timestamp}`];
  for (const secret of list) {
    const mac = await subtle.sign("HMAC", await hmacKey(subtle, secret, "sign"), message);
    items.push(`v1=${Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("")}`);
  }
  return items.join(",");
}

function malformed(message: string): WebhookVerificationError {
  return new WebhookVerificationError("malformed_header", message);
}

// HTTP's optional whitespace only: String.prototype.trim takes more than the other SDKs do.
const trimOws = (text: string): string => text.replace(/^[ \t]+|[ \t]+$/g, "");

/** The header's timestamp (its digits as sent: they are what was signed) and its v1 signatures. */
function parseHeader(header: string | readonly string[] | null | undefined): {
  timestamp: string;
  signatures: string[];
} {
  // A header sent on several lines is one comma-separated list (Node gives an array only for a few names).
  const text = typeof header === "string" ? header : (header ?? []).join(",");
  if (trimOws(text) === "") throw malformed(`the ${WEBHOOK_SIGNATURE_HEADER} header is missing or empty`);
  let timestamp: string | undefined;
  const signatures: string[] = [];
  for (const item of text.split(",")) {
    const eq = item.indexOf("=");
    if (eq < 0) continue; // not a key=value item: ignored like an unknown scheme
    const key = trimOws(item.slice(0, eq));
    const value = trimOws(item.slice(eq + 1));
    if (key === "t") {
      if (timestamp !== undefined) throw malformed(`${WEBHOOK_SIGNATURE_HEADER} has more than one t=`);
      // ASCII digits only: Number() would also take "1e9", "0x10", "1.5" and " 5 ".
      if (!/^[0-9]+$/.test(value)) {
        throw malformed(`${WEBHOOK_SIGNATURE_HEADER}'s t= must be unix seconds, not "${value}"`);
      }
      timestamp = value;
    } else if (key === "v1") {
      signatures.push(value);
    }
    // Other schemes (v0=...) are skipped, so a sender can add one before every receiver knows it.
  }
  if (timestamp === undefined) throw malformed(`${WEBHOOK_SIGNATURE_HEADER} has no t= timestamp`);
  if (signatures.length === 0) throw malformed(`${WEBHOOK_SIGNATURE_HEADER} has no v1= signature`);
  return { timestamp, signatures };
}

/** The text of UTF-8 bytes: invalid ones are refused, not replaced, and a byte order mark is kept
 * (JSON then refuses it), as in the Python and Go SDKs. */
function strictUtf8(bytes: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
}

function isEvent(value: unknown): boolean {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const { id, type } = value as { id?: unknown; type?: unknown };
  return typeof id === "string" && typeof type === "string";
}

/** The runtime's Web Crypto, or an Error saying which runtimes have it. */
function webCrypto(caller: string): SubtleCrypto {
  // Typed as always there by the DOM lib; absent from Node 18's globals and from insecure browser pages.
  const subtle = (globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle;
  if (!subtle) {
    throw new Error(
      `${caller} needs the Web Crypto API (globalThis.crypto.subtle), which this runtime lacks: use ` +
        "Node >= 19 (or Node 18 with --experimental-global-webcrypto), Deno, Bun, an edge runtime, or a " +
        "browser page served over HTTPS",
    );
  }
  return subtle;
}

/** An HMAC-SHA256 key of the secret's UTF-8 bytes (the whole `whsec_...` string). */
function hmacKey(subtle: SubtleCrypto, secret: string, usage: "sign" | "verify"): Promise<CryptoKey> {
  return subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

/** What is signed, `"{timestamp}." + body`, in a buffer of its own, and the body's part of it. */
function signedPayload(
  timestamp: string,
  body: string | Uint8Array,
): { message: Uint8Array<ArrayBuffer>; signedBody: Uint8Array } {
  const prefix = encoder.encode(`${timestamp}.`);
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const message = new Uint8Array(prefix.length + bytes.length);
  message.set(prefix);
  message.set(bytes, prefix.length);
  return { message, signedBody: message.subarray(prefix.length) };
}

/** The 32 bytes a v1 value spells in lowercase hex (as the service writes it), or undefined for anything
 * else: other lengths, uppercase, non-hex. Its shape is the sender's to know, so checking it leaks nothing. */
function decodeSignature(hex: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[0-9a-f]{64}$/.test(hex)) return undefined;
  const mac = new Uint8Array(32);
  for (let i = 0; i < 32; i++) mac[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return mac;
}
