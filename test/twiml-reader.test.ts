// The simulated client's TwiML reader, on TwiML our server builds and on broken input.
import { DEFAULT_LANGUAGES } from '../src/agent/agent.js';
import { describe, expect, it } from 'vitest';
import { parseXml, readRelayTwiml } from '../src/testing/twiml-reader.js';
import { conversationRelayTwiml, hangupTwiml } from '../src/server/twiml.js';

describe('readRelayTwiml', () => {
  it('reads the relay URL, action URL and parameters, unescaping entities', () => {
    const twiml = conversationRelayTwiml({
      publicHost: 'relay.example.test',
      secure: true,
      language: 'en-US',
      languages: DEFAULT_LANGUAGES,
      parameters: { plan: 'gold & "silver"', caller: '<vip>' },
    });
    expect(readRelayTwiml(twiml)).toEqual({
      relayUrl: 'wss://relay.example.test/relay',
      actionUrl: 'https://relay.example.test/action',
      parameters: { plan: 'gold & "silver"', caller: '<vip>' },
    });
  });

  it('reads an action URL with a connection-overrides fragment as written (&amp; unescaped)', () => {
    const twiml = conversationRelayTwiml({
      publicHost: 'relay.example.test',
      secure: true,
      language: 'en-US',
      languages: DEFAULT_LANGUAGES,
      actionOverrides: 'rc=5&rp=ct,rt,5xx',
    });
    expect(twiml).toContain('action="https://relay.example.test/action#rc=5&amp;rp=ct,rt,5xx"');
    expect(readRelayTwiml(twiml).actionUrl).toBe('https://relay.example.test/action#rc=5&rp=ct,rt,5xx');
  });

  it('returns no URLs for TwiML without ConversationRelay', () => {
    expect(readRelayTwiml(hangupTwiml('Goodbye'))).toEqual({ parameters: {} });
  });

  it('rejects malformed XML instead of half-matching it', () => {
    expect(() => parseXml('<Response><Connect></Response>')).toThrow(/malformed XML/);
    expect(() => parseXml('<a/><b/>')).toThrow();
    expect(parseXml('<?xml version="1.0"?><Response><Say>Hi &amp; bye</Say></Response>').children[0]).toMatchObject({
      name: 'Say',
      text: 'Hi & bye',
    });
  });
});
