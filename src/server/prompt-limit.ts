// Prompt size limit: a voice utterance is a sentence or two, so a prompt of kilobytes is a fault or an
// attack. It is cut rather than dropped, so the caller still gets an answer to what they began with.

/**
 * `text` cut to at most `maxBytes` UTF-8 bytes, at the last word boundary when there is one (else
 * between two characters, never inside one); undefined when it already fits.
 */
export function cutToBytes(text: string, maxBytes: number): string | undefined {
  if (Buffer.byteLength(text) <= maxBytes) return undefined;
  const bytes = Buffer.from(text, 'utf8');
  let end = maxBytes;
  // bytes[end] is the first byte left out; a continuation byte (10xxxxxx) means a character straddles the cut.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  const cut = bytes.toString('utf8', 0, end);
  if (/\s/.test(text.charAt(cut.length))) return cut.trimEnd();
  const lastSpace = cut.search(/\s\S*$/);
  return (lastSpace > 0 ? cut.slice(0, lastSpace) : cut).trimEnd();
}
