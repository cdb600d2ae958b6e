/**
 * Server-Sent Events parsing and run-event normalisation (pure: no I/O). Mirrors
 * agentruns/client_sse.py and follows the WHATWG event-stream format.
 */
import type { RunEvent } from "./types.js";
import { EVENT_TYPES, isTerminal, type RunStatus } from "./vocabulary.js";

/** Splits decoded text into lines on CRLF, LF or CR, across chunk boundaries. */
export class LineSplitter {
  private rest = "";
  private pendingCR = false;

  /** The complete lines in `chunk` (without their endings); a partial last line waits for more. */
  push(chunk: string): string[] {
    let text = chunk;
    // A CR ending the previous chunk already ended its line; a LF right after it is the same ending.
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    const lines: string[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c !== "\n" && c !== "\r") continue;
      lines.push(this.rest + text.slice(start, i));
      this.rest = "";
      if (c === "\r") {
        if (i + 1 === text.length) this.pendingCR = true;
        else if (text[i + 1] === "\n") i++;
      }
      start = i + 1;
    }
    this.rest += text.slice(start);
    return lines;
  }
}

/** One dispatched SSE message. */
export interface SSEMessage {
  data: string;
  event: string;
  id: string | undefined;
  retry: number | undefined;
}

/** Feed it lines; it returns a message at each blank line that ends one. */
export class SSEDecoder {
  private data: string[] = [];
  private event = "";
  private id: string | undefined;
  private retry: number | undefined;
  /** The last id seen, as a browser's EventSource keeps it for Last-Event-ID. */
  lastEventId: string | undefined;

  /** Consume one line; a complete message comes back on the blank line that ends it. */
  feed(line: string): SSEMessage | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined; // a comment, e.g. the server's keepalive
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.event = value;
    else if (name === "id" && !value.includes("\0")) this.id = value;
    else if (name === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return undefined;
  }

  private dispatch(): SSEMessage | undefined {
    if (this.id !== undefined) this.lastEventId = this.id;
    if (this.data.length === 0) {
      // The spec drops a message without data (it may still have set the id).
      this.event = "";
      this.id = undefined;
      return undefined;
    }
    const message: SSEMessage = {
      data: this.data.join("\n"),
      event: this.event || "message",
      id: this.id,
      retry: this.retry,
    };
    this.data = [];
    this.event = "";
    this.id = undefined;
    this.retry = undefined;
    return message;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A run event whose status or note `data` is always an object (`{status, error?}`, `{note}`), even
 * from a server that sends it as a JSON string. */
export function normalizeEvent(raw: Record<string, unknown>): RunEvent {
  const type = raw["type"];
  const data = raw["data"];
  if ((type === "status" || type === "note") && typeof data === "string") {
    let decoded: unknown = data;
    try {
      decoded = JSON.parse(data);
    } catch {
      // not JSON: keep the text
    }
    const key = type === "note" ? "note" : "status";
    return { ...raw, data: isObject(decoded) ? decoded : { [key]: decoded } } as unknown as RunEvent;
  }
  return raw as unknown as RunEvent;
}

/** The run event an SSE message carries; undefined for messages that are not run events. */
export function eventFromSSE(message: SSEMessage): RunEvent | undefined {
  let payload: unknown;
  try {
    payload = JSON.parse(message.data);
  } catch {
    payload = undefined;
  }
  if (isObject(payload) && "seq" in payload && "type" in payload) return normalizeEvent(payload);
  // A server that sends the chunk itself as data: rebuild the event from the SSE fields.
  const known = (EVENT_TYPES as readonly string[]).includes(message.event);
  if (message.id === undefined || !/^\d+$/.test(message.id) || !known) return undefined;
  return normalizeEvent({ seq: Number(message.id), type: message.event, data: message.data, at: null });
}

/** The terminal status an event announces, else undefined. */
export function terminalStatus(event: RunEvent): RunStatus | undefined {
  if (event.type !== "status") return undefined;
  const status = event.data.status;
  return isTerminal(status) ? status : undefined;
}
