// Start-up wiring of snapshot encryption at rest: the keyring from the configuration, the store
// wrapped with it, and a warning when a publicly reachable server would store PII in plaintext.
import type { Config } from '../config.js';
import { withEncryption } from '../stores/encrypted-store.js';
import { parseKeyring } from '../stores/keyring.js';
import type { SnapshotStore } from '../stores/types.js';
import type { Logger } from './logger.js';

type EncryptionConfig = Pick<Config, 'publicHost' | 'store' | 'snapshotKey' | 'snapshotKeys'>;

/**
 * The start-up warning for real calls (PUBLIC_HOST set) whose snapshots would be written in plaintext,
 * or undefined. The memory store keeps nothing at rest, so it needs no key.
 */
export function plaintextSnapshotWarning(config: EncryptionConfig): string | undefined {
  if (config.publicHost === undefined || config.store === 'memory') return undefined;
  if (config.snapshotKey !== undefined || config.snapshotKeys !== undefined) return undefined;
  return `PUBLIC_HOST is set but SNAPSHOT_KEY is not: call snapshots (transcripts, keypad digits, caller numbers) are stored unencrypted in ${config.store}`;
}

/** `store` with snapshots encrypted when a key is configured (else as it is, with the warning above); throws on a bad key. */
export function encryptSnapshots(config: EncryptionConfig, store: SnapshotStore, logger: Logger): SnapshotStore {
  const warning = plaintextSnapshotWarning(config);
  if (warning) logger.warn(warning);
  let keyring;
  try {
    keyring = parseKeyring({ key: config.snapshotKey, keys: config.snapshotKeys });
  } catch (err) {
    // Start-up stops here: let go of the store's file or connection on the way out.
    store.close().catch(() => {});
    throw err;
  }
  if (!keyring) return store;
  logger.info({ kid: keyring.current.kid, keys: keyring.keys.size }, 'snapshots encrypted at rest');
  return withEncryption(store, keyring, {
    onUnreadable: (err) => logger.error({ callSid: err.callSid, err }, 'stored snapshot could not be decrypted; treating the session as unknown'),
  });
}
