// Checks once per run, with the full validating SimulatedCall, that the floor answers a prompt with
// exactly the frames the real server sends (so the comparison is like for like: 13 `text` frames,
// the word-sized chunks, then `last: true`) and that every frame of both is a valid ConversationRelay message.
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { postHangUp } from './hang-up.js';
import { PROMPT } from './load.js';

export interface FrameCheck {
  floorFrames: number;
  serverFrames: number;
  /** Same tokens and `last` flags in the same order. */
  identical: boolean;
  invalidFrames: number;
}

async function replyFrames(url: string, hangUp?: (callSid: string) => Promise<void>): Promise<{ frames: string[]; invalid: number }> {
  const call = await SimulatedCall.connect({ url });
  try {
    call.prompt(PROMPT);
    const reply = await call.nextReply(15_000);
    return { frames: reply.tokens.map((t) => JSON.stringify([t.token, t.last])), invalid: call.invalidFrames };
  } finally {
    await call.close();
    await hangUp?.(call.callSid);
  }
}

/** `serverHttpUrl`: the server's call is ended with its action callback afterwards, as a hang-up ends it. */
export async function checkFrames(floorUrl: string, serverUrl: string, serverHttpUrl?: string): Promise<FrameCheck> {
  const floor = await replyFrames(floorUrl);
  const hangUp = serverHttpUrl ? (callSid: string) => postHangUp(serverHttpUrl, callSid) : undefined;
  const server = await replyFrames(serverUrl, hangUp);
  return {
    floorFrames: floor.frames.length,
    serverFrames: server.frames.length,
    identical: floor.frames.join('\n') === server.frames.join('\n'),
    invalidFrames: floor.invalid + server.invalid,
  };
}
