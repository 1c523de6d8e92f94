// Persists the latest value of one session: bursts collapse into one write, and writes never overlap,
// so an older snapshot can never land after a newer one.

interface Pending<T> {
  value: T;
  seq: number;
}

export class CoalescingWriter<T> {
  private next: Pending<T> | undefined;
  private timer: NodeJS.Immediate | undefined;
  private draining: Promise<void> | undefined;
  /** Sequence number of the latest scheduled value. */
  private seq = 0;
  /** Highest sequence number that is written or was dropped after an error. */
  private settled = 0;

  constructor(
    private readonly write: (value: T) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Remembers `value` as the one to persist; it replaces anything not yet being written. */
  schedule(value: T): void {
    this.next = { value, seq: ++this.seq };
    // A running drain picks the value up after its current write; otherwise start on the next turn
    // so synchronous bursts (several transitions per event) coalesce.
    if (!this.timer && !this.draining) this.timer = setImmediate(() => this.start());
  }

  /** Whether some scheduled value is not yet durably written. */
  get pending(): boolean {
    return this.next !== undefined || this.draining !== undefined;
  }

  /** Resolves once everything scheduled before the call is written (or dropped after onError). */
  async flush(): Promise<void> {
    const target = this.seq;
    while (this.settled < target) {
      if (this.timer) this.start(); // no reason to wait for the next turn
      if (!this.draining) return;
      await this.draining;
    }
  }

  private start(): void {
    clearImmediate(this.timer);
    this.timer = undefined;
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
      // A value scheduled between the loop's exit and this callback found `draining` still set.
      if (this.next) this.start();
    });
  }

  private async drain(): Promise<void> {
    while (this.next) {
      const { value, seq } = this.next;
      this.next = undefined;
      try {
        await this.write(value);
        this.settled = seq;
      } catch (err) {
        // The session is no longer ours to write (e.g. StaleLeaseError): drop what is queued.
        this.next = undefined;
        this.settled = this.seq;
        this.onError(err);
        return;
      }
    }
  }
}
