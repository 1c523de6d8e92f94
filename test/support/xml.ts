// TwiML checks in tests use the same reader as the simulated client.
export { child, parseXml, type XmlElement } from '../../src/testing/twiml-reader.js';
