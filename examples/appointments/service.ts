// A tiny appointments service on node:http, standing in for a clinic's booking system: the agent's
// tools call it over HTTP. It books each Idempotency-Key once: a repeated request gets the booking
// the first one made. Everything it received is kept in `received` (the test reads it).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Slot {
  id: string;
  /** Local time, e.g. '2031-03-04T09:00'. */
  start: string;
}

export interface Booking {
  confirmation: string;
  slotId: string;
  start: string;
}

export interface ReceivedRequest {
  method: string;
  path: string;
  idempotencyKey?: string;
  body?: unknown;
}

export interface AppointmentsService {
  url: string;
  received: ReceivedRequest[];
  bookings: Booking[];
  close(): Promise<void>;
}

const SLOTS: Slot[] = [
  { id: 'slot-0900', start: '2031-03-04T09:00' },
  { id: 'slot-1130', start: '2031-03-04T11:30' },
  { id: 'slot-1400', start: '2031-03-05T14:00' },
];

/** The one patient it knows: date of birth and PIN (1 + 2 + 3 = 6: the PIN's check digit). */
export const PATIENT = { dateOfBirth: '1985-07-04', pin: '1236' };

export async function startAppointmentsService(): Promise<AppointmentsService> {
  const received: ReceivedRequest[] = [];
  const bookings: Booking[] = [];
  const byKey = new Map<string, Booking>();

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const key = req.headers['idempotency-key'];
    const request: ReceivedRequest = { method: req.method ?? '', path: url.pathname, ...(typeof key === 'string' ? { idempotencyKey: key } : {}) };
    received.push(request);
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };

    if (req.method === 'GET' && url.pathname === '/slots') {
      const date = url.searchParams.get('date');
      const taken = new Set(bookings.map((b) => b.slotId));
      send(200, { slots: SLOTS.filter((s) => !taken.has(s.id) && (!date || s.start.startsWith(date))) });
      return;
    }
    if (req.method === 'POST' && url.pathname === '/appointments') {
      if (typeof key !== 'string' || key === '') return send(400, { error: 'an Idempotency-Key header is required' });
      const body = JSON.parse(text || '{}') as { slotId?: string; dateOfBirth?: string; pin?: string };
      request.body = body;
      // A repeat of a request already done: the same answer, nothing booked again.
      const done = byKey.get(key);
      if (done) return send(200, done);
      if (body.dateOfBirth !== PATIENT.dateOfBirth || body.pin !== PATIENT.pin) return send(403, { error: 'patient not verified' });
      const slot = SLOTS.find((s) => s.id === body.slotId);
      if (!slot) return send(404, { error: 'no such slot' });
      if (bookings.some((b) => b.slotId === slot.id)) return send(409, { error: 'slot already taken' });
      const booking = { confirmation: `RC-${1001 + bookings.length}`, slotId: slot.id, start: slot.start };
      bookings.push(booking);
      byKey.set(key, booking);
      return send(201, booking);
    }
    send(404, { error: 'not found' });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    bookings,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
