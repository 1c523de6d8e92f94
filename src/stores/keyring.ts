// Snapshot encryption keys from configuration: parsed and checked once, so a bad key stops the
// start-up with a clear message instead of failing on the first write.

/** AES-256 takes a 32-byte key. */
export const KEY_BYTES = 32;
/** The key id records get when the single `SNAPSHOT_KEY` form is used. */
export const DEFAULT_KID = 'default';

const KID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export interface Keyring {
  /** Encrypts every new write. */
  readonly current: { readonly kid: string; readonly key: Buffer };
  /** Every configured key (the current one included), for reading older records. */
  readonly keys: ReadonlyMap<string, Buffer>;
}

export class KeyringError extends Error {
  override name = 'KeyringError';
}

export interface KeyringSource {
  /** `SNAPSHOT_KEY`: one base64 key, id `default`. */
  key?: string;
  /** `SNAPSHOT_KEYS`: `kid1:key1,kid2:key2`; the first encrypts, all decrypt. */
  keys?: string;
}

/** The keyring named by the configuration, undefined when no key is configured; throws KeyringError. */
export function parseKeyring({ key, keys }: KeyringSource): Keyring | undefined {
  if (key !== undefined && keys !== undefined) {
    throw new KeyringError(`set SNAPSHOT_KEY or SNAPSHOT_KEYS, not both (SNAPSHOT_KEY=k is SNAPSHOT_KEYS=${DEFAULT_KID}:k)`);
  }
  if (key !== undefined) return fromEntries([[DEFAULT_KID, decodeKey(key, 'SNAPSHOT_KEY')]]);
  if (keys === undefined) return undefined;
  const entries: Array<[string, Buffer]> = [];
  for (const [i, raw] of keys.split(',').entries()) {
    const entry = raw.trim();
    const colon = entry.indexOf(':');
    if (colon < 0) throw new KeyringError(`SNAPSHOT_KEYS entry ${i + 1} is not "kid:base64key"`);
    const kid = entry.slice(0, colon).trim();
    if (!KID_PATTERN.test(kid)) {
      throw new KeyringError(`SNAPSHOT_KEYS entry ${i + 1}: key id "${kid}" must be 1-64 characters of A-Z a-z 0-9 . _ -`);
    }
    if (entries.some(([seen]) => seen === kid)) throw new KeyringError(`SNAPSHOT_KEYS names key id "${kid}" twice`);
    entries.push([kid, decodeKey(entry.slice(colon + 1).trim(), `SNAPSHOT_KEYS key "${kid}"`)]);
  }
  return fromEntries(entries);
}

function fromEntries(entries: Array<[string, Buffer]>): Keyring {
  const [first] = entries;
  if (!first) throw new KeyringError('SNAPSHOT_KEYS is set but names no key');
  return { current: { kid: first[0], key: first[1] }, keys: new Map(entries) };
}

/** Strict base64 of exactly 32 bytes: Buffer.from alone would silently skip bad characters. */
function decodeKey(text: string, what: string): Buffer {
  const hint = 'expected the base64 of 32 random bytes, e.g. `openssl rand -base64 32`';
  if (text === '') throw new KeyringError(`${what} is empty; ${hint}`);
  const key = Buffer.from(text, 'base64');
  if (key.toString('base64') !== text) throw new KeyringError(`${what} is not valid base64; ${hint}`);
  if (key.length !== KEY_BYTES) throw new KeyringError(`${what} is ${key.length} bytes, not ${KEY_BYTES}; ${hint}`);
  return key;
}
