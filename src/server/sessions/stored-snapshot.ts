// Snapshots stored by the previous version of the session machine, brought to today's shape before
// they are restored, so a deploy does not drop the calls in flight: that version ran each keypad
// kind as its own child machine in a substate of `collecting`, its LLM child had no id, and its
// context held the text of the reply in flight (`reply`; today the reply actor keeps it).
const OLD_KEYPAD_SRCS = new Set(['languageMenu', 'phoneNumber', 'dateOfBirth', 'digits']);

interface StoredChild {
  src?: unknown;
  [key: string]: unknown;
}

interface Stored {
  value?: { live?: { conversation?: unknown } };
  context?: Record<string, unknown>;
  children?: Record<string, StoredChild>;
  [key: string]: unknown;
}

/** `persisted` in today's shape (the same object when it already is). */
export function upgradeStoredSnapshot(persisted: unknown): unknown {
  const stored = persisted as Stored | null;
  const live = stored?.value?.live;
  if (!stored || !live || !stored.children) return persisted;
  let changed = false;
  // A reply in flight restarts from its beginning after a restore: the text it had streamed goes.
  let context = stored.context;
  if (context && 'reply' in context) {
    const { reply: _streamed, ...rest } = context;
    context = rest;
    changed = true;
  }
  // `{ collecting: 'phoneNumber' }` -> 'collecting': the one keypad actor runs every kind from its input.
  let conversation = live.conversation;
  if (conversation && typeof conversation === 'object' && 'collecting' in conversation) {
    conversation = 'collecting';
    changed = true;
  }
  const children: Record<string, StoredChild> = {};
  for (const [id, child] of Object.entries(stored.children)) {
    if (id === 'dtmf' && typeof child.src === 'string' && OLD_KEYPAD_SRCS.has(child.src)) {
      children.dtmf = { ...child, src: 'keypad' };
      changed = true;
    } else if (child.src === 'llmReply' && id !== 'llm') {
      children.llm = child; // named invokes: the reply child is 'llm' now
      changed = true;
    } else if (child.src === 'deadlineTimer' && id !== 'graceTimer') {
      children.graceTimer = child;
      changed = true;
    } else {
      children[id] = child;
    }
  }
  if (!changed) return persisted;
  return { ...stored, context, value: { ...stored.value, live: { ...live, conversation } }, children };
}

/** The stored session's grace deadline (epoch ms), if it has one. */
export function graceDeadlineOf(record: { snapshot: unknown }): number | null {
  const context = (record.snapshot as { context?: { graceDeadline?: unknown } } | null)?.context;
  return typeof context?.graceDeadline === 'number' ? context.graceDeadline : null;
}
