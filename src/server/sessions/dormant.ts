// A hibernated session's snapshot, held small: its JSON with the runs every resting session spells
// out alike (the resting state, the keys, the defaults) each written as one control character. What
// is left is mostly the call's own (ids, hashes, numbers, history): about 850 characters become
// about 250, for a couple of microseconds. Not zlib: its per-call native buffers, freed in bursts
// (every idle call hibernates at once), cost more resident memory than they saved.
//
// Lossless for any JSON text: JSON.stringify never writes a raw U+0001-U+001F (it escapes them), so
// each of those characters can stand for one run and decode back to it. A run that does not match
// (a newer context shape, a value other than the default) is simply kept as it is.

/** In the order they appear in a resting session's snapshot; a longer run before a shorter one it starts with. */
const RUNS = [
  '{"status":"active","value":{"live":{"link":"connected","conversation":"idle"}},"historyValue":{},"context":{"callSid":"',
  '","sessionKeyHash":"',
  '","resumeKeyHash":null,"resumeTokenHashes":[],"earlierSessionKeyHashes":[',
  '","resumeKeyHash":',
  ',"resumeTokenHashes":[',
  ',"earlierSessionKeyHashes":[',
  '],"accountSid":"',
  '","from":"',
  '","to":"',
  '","customParameters":{},"language":"',
  '","customParameters":{',
  ',"language":"',
  '","timeouts":{"graceMs":',
  ',"retentionMs":',
  ',"dtmfIdleMs":',
  ',"maxResumes":',
  '},"historyLimits":{"maxTurns":',
  ',"maxBytes":',
  '},"history":[',
  '{"role":"user","content":"',
  '"},{"role":"assistant","content":"',
  '"},{"role":"user","content":"',
  '],"historyDropped":',
  ',"undelivered":null,"toolCall":null,"dtmf":null,"toolRounds":',
  ',"resumes":',
  ',"disconnects":',
  ',"lastCloseCode":',
  ',"graceDeadline":null,"handoffData":null,"createdAt":',
  ',"resumedAt":',
  ',"endedReason":null},"children":{}}',
  ',"toolCalls":[{"id":"',
] as const;

// Codes are U+0001-U+001F: a 32nd run would be a space, which JSON text has raw.
if (RUNS.length > 31) throw new Error('dormant.ts: at most 31 runs');
const CODE_OF = new Map<string, string>(RUNS.map((run, i) => [run, String.fromCharCode(i + 1)]));
const escape = (run: string) => run.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
const ANY_RUN = new RegExp(RUNS.map(escape).join('|'), 'g');
const ANY_CODE = /[\u0001-\u001f]/g;

/** JSON text (as JSON.stringify writes it) in its short form. */
export function packSnapshot(json: string): string {
  return json.replace(ANY_RUN, (run) => CODE_OF.get(run) ?? run);
}

/** The JSON text back. */
export function unpackSnapshot(packed: string): string {
  return packed.replace(ANY_CODE, (code) => RUNS[code.charCodeAt(0) - 1] ?? code);
}

/** A persisted snapshot as a hibernated session holds it. */
export function toDormant(persisted: unknown): string {
  return packSnapshot(JSON.stringify(persisted));
}

/** The persisted snapshot a hibernated session holds (throws on text that is not one's short form). */
export function fromDormant(dormant: string): unknown {
  return JSON.parse(unpackSnapshot(dormant));
}
