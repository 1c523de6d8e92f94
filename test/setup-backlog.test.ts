// The setup backlog (src/server/setup-backlog.ts), in event-loop turns: held setups are handled a batch
// per turn, in the order they came, and what is read between batches is handled between them.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { SetupBacklog } from '../src/server/setup-backlog.js';
import { mayClaimResume } from '../src/server/relay-socket.js';

describe('the setup backlog', () => {
  it('hands held setups on a batch per turn, in arrival order, none on the turn they came', async () => {
    const backlog = new SetupBacklog(3);
    let turn = 0;
    const taken: Array<[number, number]> = [];
    for (let i = 0; i < 7; i++) backlog.add({ takeHeld: () => taken.push([i, turn]) });
    expect(taken).toEqual([]);
    expect(backlog.size).toBe(7);
    while (backlog.size > 0 || taken.length < 7) {
      await nextTurn();
      turn++;
    }
    expect(taken.map(([i]) => i)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    // Three per turn: the turns of 0-2, 3-5 and 6 follow one another.
    const turnOf = (i: number) => taken.find(([j]) => j === i)![1];
    expect(turnOf(0)).toBe(turnOf(2));
    expect(turnOf(3)).toBe(turnOf(0) + 1);
    expect(turnOf(5)).toBe(turnOf(3));
    expect(turnOf(6)).toBe(turnOf(3) + 1);
  });

  it('lets what arrives between batches run between them', async () => {
    const backlog = new SetupBacklog(2);
    const order: string[] = [];
    for (let i = 0; i < 4; i++) backlog.add({ takeHeld: () => order.push(`held ${i}`) });
    // Something read on the next turn (a new call's frame), queued after the first batch was scheduled.
    setImmediate(() => order.push('new call'));
    while (order.length < 5) await nextTurn();
    expect(order).toEqual(['held 0', 'held 1', 'new call', 'held 2', 'held 3']);
  });

  it('takes a frame that claims a resume in the raw text our clients and Twilio send', () => {
    const claim = (frame: object) => mayClaimResume(Buffer.from(JSON.stringify(frame)));
    expect(claim({ type: 'setup', callSid: 'CA1', sessionId: 'VX1', reconnection: true })).toBe(true);
    expect(claim({ type: 'setup', callSid: 'CA1', sessionId: 'VX1', customParameters: { resumeToken: 't' } })).toBe(true);
    expect(claim({ type: 'setup', callSid: 'CA1', sessionId: 'VX1', reconnection: false })).toBe(false);
    expect(claim({ type: 'setup', callSid: 'CA1', sessionId: 'VX1', customParameters: { callToken: 't' } })).toBe(false);
  });
});
