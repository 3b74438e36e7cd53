// The demo page: the <microturn-agent> widget makes the call (web/widget.js holds the one client of the
// protocol); this file only draws panels from the widget's events and calls its methods.
// No build step and no dependencies: the server serves this file as it is.

import { seenKey } from './widget.js';

const MAX_EVENTS = 2000; // window.microturn.events keeps the latest ones: a long call must not grow without bound
const MAX_CELLS = 600; // the activity strip keeps two minutes of micro-turns
const METER_INTERVAL_MS = 50;
const METER_FLOOR_DB = -60; // the meters show -60..0 dBFS: speech sits in the upper half, silence at zero
const IN_CALL = new Set(['connecting', 'connected', 'reconnecting']);

const $ = (id) => document.getElementById(id);
const ui = {
  agent: $('agent'),
  sessionId: $('session-id'),
  transcript: $('transcript'),
  textForm: $('text-form'),
  textInput: $('text-input'),
  instructionsForm: $('instructions-form'),
  instructions: $('instructions'),
  strip: $('strip'),
  micLevel: $('mic-level'),
  agentLevel: $('agent-level'),
  cameraToggle: $('camera-toggle'),
};
// The "press Start a call" hint: shown until a call has something to say, and again in each new call.
const transcriptPlaceholder = ui.transcript.querySelector('.placeholder');

// What the page knows, readable from the console or by a test driving a real browser. The peaks are the
// loudest sample (0..1) since the call started, measured by the widget on the actual streams.
const microturn = {
  state: 'idle',
  sessionId: null,
  events: [],
  receivedAudioPeak: 0,
  sentAudioPeak: 0,
  lastError: null,
};
window.microturn = microturn;

// ?ice=[{"urls":"turn:..."}]: STUN/TURN servers for a node that is not on this network.
const iceServers = new URLSearchParams(window.location.search).get('ice');
if (iceServers) ui.agent.setAttribute('ice-servers', iceServers);
// ?token=...: a node started with --api-key needs a session token for its own page too (docs/widget.md).
const token = new URLSearchParams(window.location.search).get('token');
if (token) ui.agent.setAttribute('token', token);
// ?camera=1: the camera switch starts on (a link to a demo with the camera, and the browser tests).
if (new URLSearchParams(window.location.search).get('camera') === '1') ui.cameraToggle.checked = true;
ui.agent.camera = ui.cameraToggle.checked;

// Session time of the latest event and when it arrived: places system lines on the session clock.
let clock = { tMs: 0, at: performance.now() };
const entries = new Map(); // transcript id → its entry
let meterTimer = 0;
let callCamera = false; // the call in progress sends the camera (it may be turned off for a while)

// ------------------------------------------------------------------------------------------ widget events

ui.agent.addEventListener('microturn-state', ({ detail: { state } }) => {
  microturn.state = state;
  document.body.dataset.state = state;
  if (state === 'connecting') {
    callCamera = false;
    resetSessionView();
    // Typed before the call: the widget sends it as session.update once the events channel opens.
    ui.agent.instructions = ui.instructions.value.trim();
    startMeters();
  }
  if (!IN_CALL.has(state)) {
    stopMeters();
    setChatEnabled(false);
    // Between calls the switch is the widget's `camera` attribute again: what the next call sends.
    ui.cameraToggle.checked = ui.agent.camera;
  }
  renderCameraToggle();
});

// The call's camera went on or off (the switch here, or the widget's own camera button).
ui.agent.addEventListener('microturn-camera', ({ detail: { on } }) => {
  if (IN_CALL.has(microturn.state)) {
    callCamera = true;
    ui.cameraToggle.checked = on;
  }
  renderCameraToggle();
});

// What the camera showed, as the model's camera features saw it.
ui.agent.addEventListener('microturn-seen', ({ detail }) => showSeen(detail));

ui.agent.addEventListener('microturn-message', ({ detail: { event } }) => {
  microturn.events.push(event);
  if (microturn.events.length > MAX_EVENTS) microturn.events.shift();
  if (typeof event.t_ms === 'number') clock = { tMs: event.t_ms, at: performance.now() };
  switch (event.type) {
    case 'session.started':
      microturn.sessionId = event.session_id;
      ui.sessionId.textContent = `session ${event.session_id} · ${event.model}`;
      setChatEnabled(true);
      // The widget sent the instructions as the events channel opened, just before this event.
      if (ui.agent.instructions) addSystemEntry('Instructions updated');
      break;
    case 'turn':
      addCell(event);
      break;
    case 'background.update':
      showBackgroundStatus(event.status);
      break;
    default:
      break; // what people said arrives as microturn-transcript
  }
});

ui.agent.addEventListener('microturn-transcript', ({ detail }) => showTranscript(detail));

ui.agent.addEventListener('microturn-error', ({ detail }) => {
  // The widget shows the message itself; the page keeps it for whoever reads window.microturn.
  microturn.lastError = `${detail.message} (${detail.code})`;
});

// ------------------------------------------------------------------------------------------ transcript

function showTranscript({ id, role, text, final, tMs, typed, interrupted }) {
  let entry = entries.get(id);
  if (!entry) {
    if (!text) return;
    entry = addEntry(role, tMs);
    entries.set(id, entry);
  }
  if (!text) {
    entry.remove(); // the recogniser dropped the utterance (e.g. it was noise)
    entries.delete(id);
    return;
  }
  entry.querySelector('.text').textContent = text;
  entry.classList.toggle('partial', !final);
  entry.classList.toggle('final', final);
  entry.classList.toggle('typed', Boolean(typed));
  // The agent's entry is "speaking" until its utterance ends.
  entry.classList.toggle('speaking', role === 'agent' && !final);
  entry.classList.toggle('interrupted', Boolean(interrupted));
  scrollTranscript();
}

function addEntry(who, tMs) {
  transcriptPlaceholder.remove();
  const entry = document.createElement('li');
  entry.className = `entry ${who}`;
  const head = document.createElement('div');
  head.className = 'entry-head';
  const name = document.createElement('span');
  name.className = 'who';
  name.textContent = { user: 'You', agent: 'Agent', camera: 'Camera' }[who];
  head.append(name, document.createElement('time'));
  const body = document.createElement('p');
  body.className = 'text';
  entry.append(head, body);
  setEntryTime(entry, tMs);
  ui.transcript.append(entry);
  return entry;
}

function setEntryTime(entry, tMs) {
  entry.dataset.tMs = String(tMs);
  const time = entry.querySelector('.entry-head time');
  time.textContent = formatSessionTime(tMs);
  time.title = `${tMs} ms into the session`;
}

// A camera line: a count that goes on updates its entry ("repetitions so far: 4" -> 5) while nothing else
// came in between, as the agent's own conversation keeps one line per topic.
function showSeen({ text, tMs }) {
  const key = seenKey(text);
  let entry = ui.transcript.lastElementChild;
  if (!entry?.classList.contains('camera') || entry.dataset.key !== key) {
    entry = addEntry('camera', tMs);
    entry.dataset.key = key;
  } else {
    setEntryTime(entry, tMs); // when the count last moved up
  }
  entry.querySelector('.text').textContent = text;
  scrollTranscript();
}

function addSystemEntry(text) {
  transcriptPlaceholder.remove();
  const entry = document.createElement('li');
  entry.className = 'entry system';
  entry.textContent = `${text} · ${formatSessionTime(sessionTimeNow())}`;
  ui.transcript.append(entry);
  scrollTranscript();
}

// What the agent handed to the background model, as a quiet line in the transcript; the answer itself
// arrives as the agent's words when the model decides to say it.
const BACKGROUND_STATUS_TEXT = {
  queued: 'Background model is working on it',
  done: 'Background work done',
  failed: 'Background work failed',
  cancelled: 'Background work cancelled',
};

function showBackgroundStatus(status) {
  const text = BACKGROUND_STATUS_TEXT[status];
  if (text) addSystemEntry(text); // running/partial are progress, not news
}

function scrollTranscript() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function addCell({ index, t_ms: tMs, user, agent, lost_ms: lostMs }) {
  const cell = document.createElement('span');
  const activity = user && agent ? 'both' : user ? 'user' : agent ? 'agent' : 'silence';
  cell.className = `cell ${activity}`;
  if (lostMs > 0) cell.classList.add('lost');
  cell.title = `#${index} at ${formatSessionTime(tMs)}: ${activity}${lostMs > 0 ? `, ${lostMs} ms lost` : ''}`;
  ui.strip.append(cell);
  while (ui.strip.childElementCount > MAX_CELLS) ui.strip.firstElementChild.remove();
  ui.strip.scrollLeft = ui.strip.scrollWidth;
}

function sessionTimeNow() {
  return Math.round(clock.tMs + performance.now() - clock.at);
}

function formatSessionTime(tMs) {
  const seconds = Math.max(0, tMs) / 1000;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, '0')}`;
}

// ---------------------------------------------------------------------------------------------- meters

// The widget measures both voices; the page polls its levels (a timer rather than requestAnimationFrame,
// so that peaks keep being recorded in background tabs and headless browsers).
function startMeters() {
  const shown = { user: 0, agent: 0 };
  meterTimer = setInterval(() => {
    const levels = ui.agent.levels;
    microturn.sentAudioPeak = Math.max(microturn.sentAudioPeak, levels.user);
    microturn.receivedAudioPeak = Math.max(microturn.receivedAudioPeak, levels.agent);
    for (const [side, element] of [['user', ui.micLevel], ['agent', ui.agentLevel]]) {
      // Fast attack, slow release: a bar that jumps with every syllable is hard to read.
      shown[side] = Math.max(levels[side], shown[side] * 0.85);
      showLevel(element, shown[side]);
    }
  }, METER_INTERVAL_MS);
}

function stopMeters() {
  clearInterval(meterTimer);
  showLevel(ui.micLevel, 0);
  showLevel(ui.agentLevel, 0);
}

function showLevel(element, peak) {
  const db = peak > 0 ? 20 * Math.log10(peak) : METER_FLOOR_DB;
  const percent = Math.round(100 * Math.min(1, Math.max(0, 1 - db / METER_FLOOR_DB)));
  element.firstElementChild.style.width = `${percent}%`;
  element.setAttribute('aria-valuenow', String(percent));
}

// ---------------------------------------------------------------------------------------------- page state

// In a call without a camera (or not connected yet) there is nothing to turn on or off: the camera
// would need a new call.
function renderCameraToggle() {
  ui.cameraToggle.disabled = IN_CALL.has(microturn.state) && !callCamera;
}

function setChatEnabled(enabled) {
  for (const control of [...ui.textForm.elements, ui.instructionsForm.querySelector('button')]) {
    control.disabled = !enabled;
  }
}

function resetSessionView() {
  microturn.sessionId = null;
  microturn.events = [];
  microturn.receivedAudioPeak = 0;
  microturn.sentAudioPeak = 0;
  microturn.lastError = null;
  ui.sessionId.textContent = '';
  ui.transcript.replaceChildren(transcriptPlaceholder);
  ui.strip.replaceChildren();
  entries.clear();
  clock = { tMs: 0, at: performance.now() };
}

// ---------------------------------------------------------------------------------------------- wiring

ui.textForm.addEventListener('submit', (e) => {
  e.preventDefault();
  // The widget answers with a microturn-transcript event (typed: true), which draws the entry.
  if (ui.agent.send(ui.textInput.value)) ui.textInput.value = '';
});

ui.cameraToggle.addEventListener('change', () => {
  if (IN_CALL.has(microturn.state)) {
    ui.agent.cameraOff = !ui.cameraToggle.checked; // the widget answers with microturn-camera
  } else {
    ui.agent.camera = ui.cameraToggle.checked;
  }
});

ui.instructionsForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const instructions = ui.instructions.value.trim();
  if (ui.agent.setInstructions(instructions)) {
    // Empty instructions put the agent back on its default ones.
    addSystemEntry(instructions ? 'Instructions updated' : 'Instructions reset to the default');
  }
});
