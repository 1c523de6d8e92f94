// Reads TwiML the way a Twilio stand-in needs to: a validated element tree (fast-xml-parser),
// so malformed TwiML fails loudly instead of half-matching.
import { XMLParser, XMLValidator } from 'fast-xml-parser';

export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  text: string;
}

type OrderedNode = Record<string, unknown> & { ':@'?: Record<string, string> };

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: false,
  ignoreDeclaration: true,
});

function toElements(nodes: OrderedNode[]): { elements: XmlElement[]; text: string } {
  const elements: XmlElement[] = [];
  let text = '';
  for (const node of nodes) {
    for (const [key, value] of Object.entries(node)) {
      if (key === ':@') continue;
      if (key === '#text') {
        text += String(value);
        continue;
      }
      const inner = toElements(value as OrderedNode[]);
      elements.push({ name: key, attributes: { ...(node[':@'] ?? {}) }, children: inner.elements, text: inner.text });
    }
  }
  return { elements, text };
}

/** Parses a document with exactly one root element. */
export function parseXml(source: string): XmlElement {
  const valid = XMLValidator.validate(source);
  if (valid !== true) throw new Error(`malformed XML: ${valid.err.msg} (line ${valid.err.line})`);
  const { elements, text } = toElements(parser.parse(source) as OrderedNode[]);
  if (elements.length !== 1 || text.trim()) throw new Error(`expected one root element, found ${elements.length}`);
  return elements[0]!;
}

/** The single child named `name`; throws when there is none or more than one. */
export function child(element: XmlElement, name: string): XmlElement {
  const found = element.children.filter((c) => c.name === name);
  if (found.length !== 1) throw new Error(`<${element.name}> has ${found.length} <${name}> children, expected 1`);
  return found[0]!;
}

export interface RelayTwiml {
  relayUrl?: string;
  actionUrl?: string;
  parameters: Record<string, string>;
}

/** The parts of `<Connect action><ConversationRelay url><Parameter/>` a caller needs. */
export function readRelayTwiml(twiml: string): RelayTwiml {
  const connect = parseXml(twiml).children.find((c) => c.name === 'Connect');
  const relay = connect?.children.find((c) => c.name === 'ConversationRelay');
  const parameters: Record<string, string> = {};
  for (const p of relay?.children.filter((c) => c.name === 'Parameter') ?? []) {
    if (p.attributes.name !== undefined) parameters[p.attributes.name] = p.attributes.value ?? '';
  }
  return {
    ...(relay?.attributes.url !== undefined ? { relayUrl: relay.attributes.url } : {}),
    ...(connect?.attributes.action !== undefined ? { actionUrl: connect.attributes.action } : {}),
    parameters,
  };
}
