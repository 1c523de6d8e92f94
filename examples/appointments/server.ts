// Serves the appointments agent: `npm start` (OPENAI_API_KEY for a real model; without it the server
// runs in offline mode). Without APPOINTMENTS_URL it starts the demo appointments service alongside.
import { createRelayServer } from 'relay-actors';
import { appointmentsAgent } from './agent.js';
import { startAppointmentsService } from './service.js';

const serviceUrl = process.env.APPOINTMENTS_URL ?? (await startAppointmentsService()).url;

const server = await createRelayServer({
  agent: appointmentsAgent({ serviceUrl }),
  port: Number(process.env.PORT ?? 8080),
  // For a real call: the host Twilio reaches over TLS, and the account's auth token (signature checks).
  publicHost: process.env.PUBLIC_HOST,
  twilioAuthToken: process.env.TWILIO_AUTH_TOKEN,
  openai: { apiKey: process.env.OPENAI_API_KEY, model: 'gpt-4o-mini' },
  store: 'sqlite',
  sqlitePath: './data/appointments.db',
});
console.log(`appointments agent: voice webhook ${server.httpUrl}/twiml (service: ${serviceUrl})`);

// Drain on stop: live calls finish their reply and are stored before the process exits.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void server.close().then(() => process.exit(0)));
}
