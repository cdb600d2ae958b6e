/** Cursor pagination of GET /api/v1/agent-runs. */
import type { AgentRunSummary, RunPage } from "./types.js";

/** Every run of a listing, fetched page by page as it is iterated (each iteration starts afresh). */
export class RunList implements AsyncIterable<AgentRunSummary> {
  /** @internal */
  constructor(
    private readonly fetchPage: (cursor: string | undefined) => Promise<RunPage>,
    private readonly firstCursor?: string,
  ) {}

  /** The pages, following next_cursor until the last. */
  async *pages(): AsyncGenerator<RunPage, void, undefined> {
    let cursor = this.firstCursor;
    do {
      const page = await this.fetchPage(cursor);
      yield page;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  /** The runs, newest first. */
  async *[Symbol.asyncIterator](): AsyncGenerator<AgentRunSummary, void, undefined> {
    for await (const page of this.pages()) yield* page.data;
  }

  /** Collect every run into an array (mind the size of what you list). */
  async toArray(): Promise<AgentRunSummary[]> {
    const runs: AgentRunSummary[] = [];
    for await (const run of this) runs.push(run);
    return runs;
  }
}
