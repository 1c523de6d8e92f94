// Short lines the server itself speaks, per language.
const spanish = (language: string) => language.toLowerCase().startsWith('es');

export function resumeLine(language: string): string {
  return spanish(language) ? 'Disculpe, se cortó la llamada. Continuemos.' : 'Sorry, we got cut off. Let us continue.';
}

export function llmFailureLine(language: string): string {
  return spanish(language)
    ? 'Lo siento, tengo problemas técnicos. ¿Puede repetir?'
    : 'Sorry, I am having trouble right now. Could you say that again?';
}

export function serviceUnavailableLine(language: string): string {
  return spanish(language)
    ? 'Lo sentimos, tenemos problemas técnicos y no podemos atender su llamada ahora. Por favor, llame más tarde.'
    : 'Sorry, we are having technical trouble and cannot take your call right now. Please call again later.';
}
