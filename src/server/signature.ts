import twilio from 'twilio';

/**
 * X-Twilio-Signature check (constant-time inside the twilio package). For webhooks the URL is
 * the public https URL and params the form fields; for the socket upgrade it is the wss:// URL
 * exactly as written in TwiML, with no params.
 */
export function isValidTwilioSignature(
  authToken: string,
  signature: string | undefined,
  url: string,
  params: Record<string, string> = {},
): boolean {
  if (!signature) return false;
  return twilio.validateRequest(authToken, signature, url, params);
}
