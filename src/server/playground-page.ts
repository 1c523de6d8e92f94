// The /playground page: markup and styles only (no fonts, images or scripts from elsewhere); its
// behaviour is src/playground/app.ts, served as /playground/app.js.
export const playgroundPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>relay-actors playground</title>
<link rel="icon" href="data:,">
<style>
  :root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #f4f5f8; }
  body { margin: 0; }
  header { padding: 12px 20px; background: #1d2330; color: #fff; display: flex; gap: 16px; align-items: center; }
  header h1 { font-size: 17px; margin: 0; font-weight: 600; }
  header .state { margin-left: auto; font-size: 13px; padding: 3px 10px; border-radius: 10px; background: #3a4254; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) 320px; gap: 16px; padding: 16px 20px; }
  section { background: #fff; border-radius: 8px; padding: 14px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: #667; margin: 0 0 10px; }
  #transcript { height: 340px; overflow-y: auto; display: flex; flex-direction: column; gap: 6px; }
  .line { padding: 6px 10px; border-radius: 8px; max-width: 85%; line-height: 1.35; white-space: pre-wrap; }
  .caller { align-self: flex-end; background: #dbe7ff; }
  .agent { align-self: flex-start; background: #eef0f3; }
  .agent.streaming { outline: 1px dashed #9aa3b5; }
  .agent.cut { color: #778; }
  .agent.cut::after { content: " (cut off)"; font-style: italic; }
  form { display: flex; gap: 8px; margin-top: 10px; }
  input[type=text] { flex: 1; padding: 8px; font: inherit; border: 1px solid #c5cad4; border-radius: 6px; }
  button { font: inherit; padding: 7px 12px; border-radius: 6px; border: 1px solid #c5cad4; background: #fff; cursor: pointer; }
  button.primary { background: #2f6fed; color: #fff; border-color: #2f6fed; }
  button:disabled { opacity: .45; cursor: default; }
  .row { display: flex; gap: 8px; flex-wrap: wrap; margin-top: 10px; align-items: center; }
  #keypad { display: grid; grid-template-columns: repeat(3, 56px); gap: 6px; }
  #keypad button { height: 42px; font-size: 18px; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 4px 10px; margin: 0; font-size: 13px; }
  dt { color: #667; } dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-word; }
  #progress { letter-spacing: 3px; }
  #timeline { list-style: none; padding: 0; margin: 0; font-size: 12px; max-height: 220px; overflow-y: auto; font-family: ui-monospace, monospace; }
  #timeline li { padding: 2px 0; border-bottom: 1px solid #f0f1f4; }
  label { font-size: 13px; }
</style>
</head>
<body>
<header><h1>relay-actors playground</h1><span>talks to this server's agent over the ConversationRelay protocol</span><span class="state" id="connection">idle</span></header>
<main>
  <div>
    <section>
      <h2>Conversation</h2>
      <div id="transcript" aria-live="polite"></div>
      <form id="say">
        <input type="text" id="utterance" placeholder="Type what the caller says" autocomplete="off" disabled>
        <button class="primary" id="send" disabled>Say</button>
        <button type="button" id="mic" hidden disabled>Speak (microphone)</button>
      </form>
      <div class="row">
        <button class="primary" id="start">Start call</button>
        <button id="drop" disabled>Drop connection</button>
        <button id="hangup" disabled>Hang up</button>
        <label id="speak-label" hidden><input type="checkbox" id="speak"> Speak replies</label>
      </div>
    </section>
    <section style="margin-top:16px">
      <h2>Keypad</h2>
      <div id="keypad"></div>
    </section>
  </div>
  <div>
    <section>
      <h2>Session</h2>
      <dl>
        <dt>call</dt><dd id="call-sid">-</dd>
        <dt>state</dt><dd id="state-value">-</dd>
        <dt>link</dt><dd id="link">-</dd>
        <dt>language</dt><dd id="language">-</dd>
        <dt>resumes</dt><dd id="resumes">0</dd>
        <dt>keypad</dt><dd id="keypad-entry">-</dd>
        <dt>entered</dt><dd id="progress">-</dd>
      </dl>
    </section>
    <section style="margin-top:16px">
      <h2>Events</h2>
      <ul id="timeline"></ul>
    </section>
  </div>
</main>
<script type="module" src="/playground/app.js"></script>
</body>
</html>
`;
