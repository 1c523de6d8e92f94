// Checks once per run, with the full validating SimulatedCall, that the baseline answers a prompt
// with exactly the frames the real server sends (so the comparison is like for like) and that
// every server frame is a valid ConversationRelay message.
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { PROMPT } from './load.js';

export interface FrameCheck {
  baselineFrames: number;
  serverFrames: number;
  /** Same tokens and `last` flags in the same order. */
  identical: boolean;
  invalidFrames: number;
}

async function replyFrames(url: string): Promise<{ frames: string[]; invalid: number }> {
  const call = await SimulatedCall.connect({ url });
  try {
    call.prompt(PROMPT);
    const reply = await call.nextReply(15_000);
    return { frames: reply.tokens.map((t) => JSON.stringify([t.token, t.last])), invalid: call.invalidFrames };
  } finally {
    await call.close();
  }
}

export async function checkFrames(baselineUrl: string, serverUrl: string): Promise<FrameCheck> {
  const baseline = await replyFrames(baselineUrl);
  const server = await replyFrames(serverUrl);
  return {
    baselineFrames: baseline.frames.length,
    serverFrames: server.frames.length,
    identical: baseline.frames.join('\n') === server.frames.join('\n'),
    invalidFrames: baseline.invalid + server.invalid,
  };
}
