// The two stream modes every load level runs in. `instant`: the fake LLM sends all tokens at once,
// so the relay's cost per turn is what dominates. `paced`: tokens arrive 20 ms apart as from a real
// model, so nothing can be batched and the cost per streamed token shows. One `llm` child serves
// both: the harness switches its pace between runs (every call is quiet by the time a run's
// measured part starts, see load.ts), so each side keeps one process and one set of connections.
import type { ChildHandle } from './child-process.js';

export type ModeName = 'instant' | 'paced';

export interface StreamMode {
  name: ModeName;
  /** Delay before every streamed token after the first. */
  chunkDelayMs: number;
}

export function streamModes(pacedChunkDelayMs: number): StreamMode[] {
  return [
    { name: 'instant', chunkDelayMs: 0 },
    { name: 'paced', chunkDelayMs: pacedChunkDelayMs },
  ];
}

/** Sets the fake LLM's pace for the requests that start from now on. */
export async function setPace(llm: ChildHandle, mode: StreamMode): Promise<void> {
  await llm.call('pace', { chunkDelayMs: mode.chunkDelayMs });
}
