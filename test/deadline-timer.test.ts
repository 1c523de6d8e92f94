// The deadline timer every grace period and keypad idle period runs on, driven by a TestClock: it fires
// at its absolute deadline and never before, even on a clock whose timers run early, waits with one
// timer, and leaves no timer behind when it is stopped. Also the spoken phrases the machines use.
import { describe, expect, it } from 'vitest';
import { assign, createActor, setup } from 'xstate';
import type { Clock } from '../src/clock.js';
import { createDeadlineTimer, type DeadlineEvent } from '../src/machines/deadline-timer.js';
import { llmFailureLine, resumeLine, serviceUnavailableLine } from '../src/machines/phrases.js';
import { TestClock } from './support/test-clock.js';

/** A parent that invokes the timer until it fires and records what it sent. */
function parentOf(clock: Clock, at: number) {
  return setup({
    types: { context: {} as { fired: DeadlineEvent[] } },
    actors: { timer: createDeadlineTimer(clock) },
  }).createMachine({
    context: { fired: [] },
    initial: 'waiting',
    states: {
      waiting: {
        invoke: { src: 'timer', input: { at, event: 'DEADLINE' } },
        on: { DEADLINE: { target: 'done', actions: assign({ fired: ({ context, event }) => [...context.fired, event as DeadlineEvent] }) } },
      },
      done: {},
    },
  });
}

/** Records every wait the timer asks its clock for. */
function recording(clock: Clock): { clock: Clock; waits: number[] } {
  const waits: number[] = [];
  return {
    waits,
    clock: {
      now: () => clock.now(),
      setTimeout: (fn, ms) => {
        waits.push(ms);
        return clock.setTimeout(fn, ms);
      },
      clearTimeout: (handle) => clock.clearTimeout(handle),
    },
  };
}

describe('deadline timer', () => {
  it('fires exactly at the deadline, stamped with the time it fired, after one wait for the whole time', () => {
    const clock = new TestClock(1_000_000);
    const { clock: spy, waits } = recording(clock);
    const actor = createActor(parentOf(spy, 1_000_750)).start();
    expect(waits).toEqual([750]);
    clock.advance(749);
    expect(actor.getSnapshot().context.fired).toEqual([]);
    clock.advance(1);
    expect(actor.getSnapshot().context.fired).toEqual([{ type: 'DEADLINE', at: 1_000_750 }]);
    expect(clock.pending).toBe(0);
    actor.stop();
  });

  it('on a clock whose timers run early, waits out the rest instead of firing early', () => {
    const clock = new TestClock(0);
    // The first timer comes back 40 ms early (coarse timer granularity), later ones on time.
    let first = true;
    const early: Clock = {
      now: () => clock.now(),
      setTimeout: (fn, ms) => {
        const wait = first ? ms - 40 : ms;
        first = false;
        return clock.setTimeout(fn, wait);
      },
      clearTimeout: (handle) => clock.clearTimeout(handle),
    };
    const { clock: spy, waits } = recording(early);
    const actor = createActor(parentOf(spy, 100)).start();
    clock.advance(60);
    expect(actor.getSnapshot().context.fired).toEqual([]);
    expect(waits).toEqual([100, 40]);
    clock.advance(39);
    expect(actor.getSnapshot().context.fired).toEqual([]);
    clock.advance(1);
    expect(actor.getSnapshot().context.fired).toEqual([{ type: 'DEADLINE', at: 100 }]);
    actor.stop();
  });

  it('a deadline already past fires on the next timer turn, not during start', () => {
    const clock = new TestClock(5_000);
    const { clock: spy, waits } = recording(clock);
    const actor = createActor(parentOf(spy, 4_000)).start();
    expect(waits).toEqual([0]);
    expect(actor.getSnapshot().context.fired).toEqual([]);
    clock.advance(0);
    expect(actor.getSnapshot().context.fired).toEqual([{ type: 'DEADLINE', at: 5_000 }]);
    actor.stop();
  });

  it('stopping it clears its timer', () => {
    const clock = new TestClock(0);
    const actor = createActor(parentOf(clock, 1_000)).start();
    expect(clock.pending).toBe(1);
    actor.stop();
    expect(clock.pending).toBe(0);
  });
});

describe('spoken phrases', () => {
  const lines = { resumeLine, llmFailureLine, serviceUnavailableLine };

  it('each line exists in English and Spanish, and they are different sentences', () => {
    const all: string[] = [];
    for (const [name, line] of Object.entries(lines)) {
      const english = line('en-US');
      const spanish = line('es-US');
      expect(english.trim().length, name).toBeGreaterThan(10);
      expect(spanish.trim().length, name).toBeGreaterThan(10);
      expect(spanish, name).not.toBe(english);
      all.push(english, spanish);
    }
    expect(new Set(all).size).toBe(all.length);
  });

  it('Spanish for every es tag, whatever its case; English for anything else', () => {
    for (const [name, line] of Object.entries(lines)) {
      for (const tag of ['es-US', 'ES-MX', 'es']) expect(line(tag), `${name}(${tag})`).toBe(line('es-US'));
      for (const tag of ['en-GB', 'ca-ES', 'fr-FR', '']) expect(line(tag), `${name}(${tag})`).toBe(line('en-US'));
    }
    expect(resumeLine('es-US')).toMatch(/Continuemos/);
    expect(llmFailureLine('en-US')).toMatch(/^Sorry/);
  });
});
