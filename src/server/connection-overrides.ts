// Twilio "Webhook connection overrides": a URL fragment such as `#rc=5&rp=ct,rt,5xx` on a webhook URL
// tells Twilio how to connect, time out and retry that callback
// (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides). We put one on the
// <Connect action> URL so a callback that meets a restarting process is retried instead of ending the call.
import { z } from 'zod';

/**
 * Retry on connection failures, read timeouts and 5xx (e.g. a proxy's 502 while the process restarts),
 * up to Twilio's maximum of 5 retries. Never on 4xx: a refused signature or bad request stays refused.
 * Safe because /action is idempotent (a repeated 64105 for a session in grace answers the same TwiML).
 */
export const DEFAULT_ACTION_URL_OVERRIDES = 'rc=5&rp=ct,rt,5xx';

const RETRY_POLICIES = ['4xx', '5xx', 'ct', 'rt', 'all'] as const;

/** Whole milliseconds (or a count) within the range Twilio's documentation gives. */
const wholeNumber = (min: number, max: number, what: string) =>
  z
    .string()
    .regex(/^\d+$/, `${what} must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().min(min, `${what} must be from ${min} to ${max}`).max(max, `${what} must be from ${min} to ${max}`));

const overridesSchema = z.strictObject({
  ct: wholeNumber(100, 10_000, 'ct (connect timeout, ms)').optional(),
  rt: wholeNumber(100, 15_000, 'rt (read timeout, ms)').optional(),
  tt: wholeNumber(100, 15_000, 'tt (total time, ms)').optional(),
  rc: wholeNumber(0, 5, 'rc (retry count)').optional(),
  rp: z
    .string()
    .refine(
      (v) => {
        const parts = v.split(',');
        return parts.every((p) => (RETRY_POLICIES as readonly string[]).includes(p)) && new Set(parts).size === parts.length;
      },
      `rp (retry policy) must be a comma list of distinct ${RETRY_POLICIES.join(', ')}`,
    )
    .optional(),
  // Edge names (ashburn, dublin, sao-paulo, ...): the list changes, so only their shape is checked.
  e: z.string().regex(/^[a-z]+(-[a-z]+)*$/, 'e (edge) must be an edge name such as ashburn or sao-paulo').optional(),
});

export type ConnectionOverrides = z.output<typeof overridesSchema>;

/**
 * Reads `rc=5&rp=ct,5xx` (a leading `#` is allowed) into its keys, or a list of what is wrong.
 * Empty text means no overrides.
 */
export function parseConnectionOverrides(text: string): { ok: true; value: ConnectionOverrides } | { ok: false; problems: string[] } {
  const body = text.startsWith('#') ? text.slice(1) : text;
  if (body === '') return { ok: true, value: {} };
  const problems: string[] = [];
  const pairs: Record<string, string> = {};
  for (const pair of body.split('&')) {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (eq <= 0 || eq === pair.length - 1) problems.push(`"${pair}" is not key=value`);
    else if (key in pairs) problems.push(`${key} is given twice`);
    else pairs[key] = pair.slice(eq + 1);
  }
  const parsed = overridesSchema.safeParse(pairs);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      problems.push(
        issue.code === 'unrecognized_keys'
          ? `unknown key ${issue.keys.join(', ')} (supported: ct, rt, tt, rc, rp, e)`
          : `${issue.message} (got "${pairs[String(issue.path[0])]}")`,
      );
    }
  }
  return problems.length ? { ok: false, problems } : { ok: true, value: parsed.data! };
}

/** The env value as a config field: validated, normalised without the leading `#`; '' turns it off. */
export const connectionOverridesSetting = (envName: string) =>
  z
    .string()
    .transform((v) => v.trim().replace(/^#/, ''))
    .superRefine((v, ctx) => {
      const result = parseConnectionOverrides(v);
      if (!result.ok) ctx.addIssue({ code: 'custom', message: `${envName}="${v}": ${result.problems.join('; ')}` });
    });

/** `url` with the overrides as its fragment (the fragment never reaches our server in the request). */
export function withOverrides(url: string, overrides: string): string {
  return overrides ? `${url}#${overrides}` : url;
}
