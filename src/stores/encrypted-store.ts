// Encryption at rest for any SnapshotStore: the snapshot (history, digits, caller numbers) is sealed
// with AES-256-GCM before the store sees it; state, epochs and times stay plain for leases and listings.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Keyring } from './keyring.js';
import { delegatingStore } from './delegating-store.js';
import type { AcquireOptions, Lease, SaveInput, SessionRecord, SnapshotStore } from './types.js';

const ALG = 'aes-256-gcm';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** What the store keeps in place of the snapshot. */
export interface SealedSnapshot {
  alg: typeof ALG;
  /** Key id it was written with, so a rotated keyring still finds the key. */
  kid: string;
  iv: string;
  tag: string;
  data: string;
}

/** A stored snapshot that cannot be opened: unknown key id, tampered, or stored under another callSid. */
export class UnreadableSnapshotError extends Error {
  override name = 'UnreadableSnapshotError';
  constructor(
    readonly callSid: string,
    reason: string,
  ) {
    super(`stored snapshot of ${callSid} is unreadable: ${reason}`);
  }
}

export interface EncryptionOptions {
  /**
   * Called for every record that cannot be decrypted. Such a record reads as missing (load,
   * acquireAndLoad) or is left out (list): the session manager then treats the call as unknown.
   */
  onUnreadable?: (err: UnreadableSnapshotError) => void;
}

/** `store` with every snapshot encrypted on save and decrypted on every read. */
export function withEncryption(store: SnapshotStore, keyring: Keyring, opts: EncryptionOptions = {}): SnapshotStore {
  const report = opts.onUnreadable ?? (() => {});
  /** The record with its snapshot opened, or undefined (reported) when it cannot be. */
  const open = (record: SessionRecord | undefined, callSid = record?.callSid): SessionRecord | undefined => {
    if (!record || callSid === undefined) return record;
    try {
      return { ...record, snapshot: openSnapshot(keyring, callSid, record.snapshot) };
    } catch (err) {
      if (!(err instanceof UnreadableSnapshotError)) throw err;
      report(err);
      return undefined;
    }
  };

  // Everything else (leases, epochs, call tokens: only hashes of random tokens) passes through unsealed.
  const acquireAndLoad = store.acquireAndLoad?.bind(store);
  return delegatingStore(store, {
    save: (lease: Lease, input: SaveInput) =>
      store.save(lease, { ...input, snapshot: sealSnapshot(keyring, lease.callSid, input.snapshot) }),
    // The callSid asked for is the associated data, so a sealed snapshot copied under another call fails.
    load: async (callSid) => open(await store.load(callSid), callSid),
    list: async () => (await store.list()).flatMap((record) => open(record) ?? []),
    ...(acquireAndLoad && {
      acquireAndLoad: async (callSid: string, owner: string, opts?: AcquireOptions) => {
        const { lease, record } = await acquireAndLoad(callSid, owner, opts);
        return { lease, record: open(record, callSid) };
      },
    }),
  });
}

/** Encrypts the snapshot's JSON under the current key, with a fresh nonce and the callSid as associated data. */
export function sealSnapshot(keyring: Keyring, callSid: string, snapshot: unknown): SealedSnapshot {
  const { kid, key } = keyring.current;
  const iv = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv(ALG, key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(callSid, 'utf8'));
  const data = Buffer.concat([cipher.update(JSON.stringify(snapshot) ?? 'null', 'utf8'), cipher.final()]);
  return { alg: ALG, kid, iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/**
 * The snapshot a sealed value holds; a value that is not sealed is returned as it is (plaintext
 * written before a key was configured, readable for migration). Throws UnreadableSnapshotError.
 */
export function openSnapshot(keyring: Keyring, callSid: string, stored: unknown): unknown {
  if (!isSealedShape(stored)) return stored;
  if (!isSealed(stored)) throw new UnreadableSnapshotError(callSid, 'malformed sealed snapshot');
  const key = keyring.keys.get(stored.kid);
  if (!key) throw new UnreadableSnapshotError(callSid, `written with key id "${stored.kid}", which is not configured`);
  const iv = Buffer.from(stored.iv, 'base64');
  const tag = Buffer.from(stored.tag, 'base64');
  if (iv.length !== NONCE_BYTES || tag.length !== TAG_BYTES) throw new UnreadableSnapshotError(callSid, 'malformed nonce or tag');
  let json: string;
  try {
    const decipher = createDecipheriv(ALG, key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(callSid, 'utf8'));
    decipher.setAuthTag(tag);
    json = Buffer.concat([decipher.update(Buffer.from(stored.data, 'base64')), decipher.final()]).toString('utf8');
  } catch {
    throw new UnreadableSnapshotError(callSid, `authentication failed (tampered, stored under another call, or a different key named "${stored.kid}")`);
  }
  return JSON.parse(json) as unknown;
}

/** Meant to be sealed: a persisted XState snapshot never has a top-level `alg`. */
function isSealedShape(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && (value as Record<string, unknown>).alg === ALG;
}

export function isSealed(value: unknown): value is SealedSnapshot {
  if (!isSealedShape(value)) return false;
  return typeof value.kid === 'string' && typeof value.iv === 'string' && typeof value.tag === 'string' && typeof value.data === 'string';
}
