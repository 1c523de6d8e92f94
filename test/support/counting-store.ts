// A real store that keeps (and so counts) every snapshot the server writes through it.
import { delegatingStore, type SaveInput, type SnapshotStore } from '../../src/stores/index.js';

export function countingStore(inner: SnapshotStore): SnapshotStore & { saves: SaveInput[] } {
  const saves: SaveInput[] = [];
  const store = delegatingStore(inner, {
    save: async (lease, input) => {
      saves.push(input);
      await inner.save(lease, input);
    },
  });
  return Object.assign(store, { saves });
}
