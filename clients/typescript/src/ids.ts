/** Random identifiers for Idempotency-Key and X-Request-Id headers. */

interface MaybeCrypto {
  randomUUID?: () => string;
  getRandomValues?: (array: Uint8Array) => Uint8Array;
}

/** A random (version 4) UUID. */
export function randomUuid(): string {
  const crypto = (globalThis as { crypto?: MaybeCrypto }).crypto;
  // randomUUID needs a secure context in browsers and Node 19+ in Node (18 has no global crypto);
  // these ids need uniqueness, not secrecy, so fall back to getRandomValues, then Math.random.
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof crypto?.getRandomValues === "function") crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A fresh X-Request-Id: 32 hex digits, as the Python SDK sends. */
export function newRequestId(): string {
  return randomUuid().replaceAll("-", "");
}

/** A fresh Idempotency-Key for a create the caller gave none for. */
export function newIdempotencyKey(): string {
  return `sdk-${randomUuid()}`;
}
