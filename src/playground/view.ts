// What /playground/calls/:callSid answers (src/server/playground.ts) and the page's panel shows
// (app.ts): one type for both sides.

/** What the page's panel shows of its call. */
export interface PlaygroundView {
  state: unknown;
  link: string;
  resumes: number;
  disconnects: number;
  language: string;
  /** A keypad entry in progress: how many keys were typed, never which. */
  keypad: { kind: string; label?: string; entered: number; maxLength?: number } | null;
}
