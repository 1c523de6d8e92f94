// A minimal XML reader for checking TwiML in tests: elements, attributes, text and the five
// predefined entities. Not a general parser (no DTDs, CDATA or namespaces), but strict about
// nesting, so malformed TwiML fails loudly instead of matching a regex by accident.
export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decode(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (whole, ent: string) => {
    if (ent.startsWith('#x') || ent.startsWith('#X')) return String.fromCodePoint(parseInt(ent.slice(2), 16));
    if (ent.startsWith('#')) return String.fromCodePoint(parseInt(ent.slice(1), 10));
    const named = ENTITIES[ent];
    if (named === undefined) throw new Error(`unknown XML entity ${whole}`);
    return named;
  });
}

function parseAttributes(src: string): Record<string, string> {
  const attributes: Record<string, string> = {};
  const re = /\s*([\w:.-]+)\s*=\s*("([^"]*)"|'([^']*)')/y;
  let pos = 0;
  while (pos < src.length) {
    if (/^\s*$/.test(src.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) throw new Error(`malformed attributes: ${src.slice(pos)}`);
    const name = m[1]!;
    if (name in attributes) throw new Error(`duplicate attribute ${name}`);
    attributes[name] = decode(m[3] ?? m[4] ?? '');
    pos = re.lastIndex;
  }
  return attributes;
}

/** Parses a document with one root element (an XML declaration is allowed). */
export function parseXml(source: string): XmlElement {
  const doc = source.replace(/^\s*<\?xml[^?]*\?>/, '');
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const tag = /<(\/?)([\w:.-]+)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(doc); m; m = tag.exec(doc)) {
    const between = doc.slice(last, m.index);
    if (between.includes('<')) throw new Error(`unparsable markup near: ${between.slice(0, 80)}`);
    const top = stack.at(-1);
    if (top) top.text += decode(between);
    else if (between.trim()) throw new Error(`text outside the root element: ${between.trim().slice(0, 80)}`);
    last = tag.lastIndex;

    const [, closing, name, attrs, selfClosing] = m;
    if (closing) {
      const open = stack.pop();
      if (open?.name !== name) throw new Error(`</${name}> closes <${open?.name ?? 'nothing'}>`);
      continue;
    }
    const element: XmlElement = { name: name!, attributes: parseAttributes(attrs ?? ''), children: [], text: '' };
    if (top) top.children.push(element);
    else if (root) throw new Error('more than one root element');
    else root = element;
    if (!selfClosing) stack.push(element);
  }
  const rest = doc.slice(last);
  if (rest.trim() || stack.length) throw new Error(`unclosed or trailing markup: ${stack.map((e) => e.name).join('>')} ${rest.slice(0, 80)}`);
  if (!root) throw new Error('no root element');
  return root;
}

/** The single child named `name`; throws when there is none or more than one. */
export function child(element: XmlElement, name: string): XmlElement {
  const found = element.children.filter((c) => c.name === name);
  if (found.length !== 1) throw new Error(`<${element.name}> has ${found.length} <${name}> children, expected 1`);
  return found[0]!;
}
