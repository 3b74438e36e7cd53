// microturn demo client: one RTCPeerConnection per call, signalled WHIP-style as docs/protocol.md describes.
// No build step and no dependencies: the server serves this file as it is.

const MAX_EVENTS = 2000; // window.microturn.events keeps the latest ones: a long call must not grow without bound
const MAX_CELLS = 600; // the activity strip keeps two minutes of micro-turns
const ICE_GATHERING_TIMEOUT_MS = 5000;
const METER_INTERVAL_MS = 50;
const METER_FLOOR_DB = -60; // the meters show -60..0 dBFS: speech sits in the upper half, silence at zero

const $ = (id) => document.getElementById(id);
const ui = {
  connect: $('connect'),
  stateLabel: $('state-label'),
  error: $('error'),
  sessionId: $('session-id'),
  transcript: $('transcript'),
  textForm: $('text-form'),
  textInput: $('text-input'),
  instructionsForm: $('instructions-form'),
  instructions: $('instructions'),
  strip: $('strip'),
  micLevel: $('mic-level'),
  agentLevel: $('agent-level'),
  remoteAudio: $('remote-audio'),
};
// The "press Connect" hint: shown until a call has something to say, and again in each new call.
const transcriptPlaceholder = ui.transcript.querySelector('.placeholder');

// What the page knows, readable from the console or by a test driving a real browser. The peaks are the
// loudest sample (0..1) since Connect, measured with WebAudio on the actual streams.
const microturn = {
  state: 'new',
  sessionId: null,
  events: [],
  receivedAudioPeak: 0,
  sentAudioPeak: 0,
  lastError: null,
};
window.microturn = microturn;

let call = null;

// ---------------------------------------------------------------------------------------------- the call

class Call {
  constructor() {
    this.closed = false;
    this.pc = null;
    this.channel = null;
    this.micStream = null;
    this.resourceUrl = null; // the session's Location, for DELETE on hang-up
    this.meters = [];
    // Created inside the Connect click so that the browser's autoplay policy lets it run.
    this.audioContext = new AudioContext();
  }

  async start() {
    const iceServers = iceServersFromQuery();
    const micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    if (this.closed) {
      // Hung up while the permission prompt was open: close() could not release this microphone yet.
      stopTracks(micStream);
      return;
    }
    this.micStream = micStream;
    this.meters.push(startMeter(this.audioContext, this.micStream, ui.micLevel, (peak) => {
      microturn.sentAudioPeak = Math.max(microturn.sentAudioPeak, peak);
    }));

    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this.onConnectionState());
    pc.addEventListener('track', (e) => this.onRemoteTrack(e));
    const [track] = this.micStream.getAudioTracks();
    pc.addTransceiver(track, { direction: 'sendrecv', streams: [this.micStream] });
    // The channel must exist before the offer, or the offer carries no SCTP m-line for it.
    this.channel = pc.createDataChannel('events');
    this.channel.addEventListener('open', () => this.onChannelOpen());
    this.channel.addEventListener('close', () => this.onChannelClosed());
    this.channel.addEventListener('message', (e) => onServerMessage(e.data));

    await pc.setLocalDescription(await pc.createOffer());
    // The node does not take trickled candidates (PATCH answers 405): the offer must hold them all.
    await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
    if (this.closed) return;

    let response;
    try {
      response = await fetch('/v1/sessions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp' },
        body: pc.localDescription.sdp,
      });
    } catch (err) {
      throw new Error(`Could not reach the server: ${err.message}`);
    }
    if (!response.ok) throw new Error(await describeHttpError(response));
    const location = response.headers.get('Location');
    this.resourceUrl = location ? new URL(location, response.url).href : null;
    const answer = await response.text();
    if (this.closed) {
      // Hung up while the server was answering: release the session it just made.
      this.deleteSession();
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  }

  onConnectionState() {
    const state = this.pc.connectionState;
    if (this.closed) return;
    setState(state);
    if (state === 'failed') {
      showError('The media connection failed (ICE/DTLS). Check ?ice= servers if the node is not on this network.');
      this.close();
    }
  }

  onRemoteTrack(event) {
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    // Chrome only feeds a remote WebRTC stream into WebAudio while a media element plays it, so the
    // <audio> element is what makes the agent meter work as well as what you hear.
    ui.remoteAudio.srcObject = stream;
    this.meters.push(startMeter(this.audioContext, stream, ui.agentLevel, (peak) => {
      microturn.receivedAudioPeak = Math.max(microturn.receivedAudioPeak, peak);
    }));
  }

  onChannelOpen() {
    setChatEnabled(true);
    if (ui.instructions.value.trim()) this.sendInstructions();
  }

  onChannelClosed() {
    setChatEnabled(false);
    if (this.closed) return;
    // We did not hang up: the node ended the session (deleted, shut down, gave up on our media) or the
    // connection dropped.
    showError('The session ended: the server closed it or the connection dropped.');
    this.close();
    setState('closed');
  }

  send(message) {
    if (this.channel?.readyState !== 'open') return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  sendInstructions() {
    const instructions = ui.instructions.value.trim();
    if (this.send({ type: 'session.update', instructions })) {
      // Empty instructions put the agent back on its default ones.
      addSystemEntry(instructions ? 'Instructions updated' : 'Instructions reset to the default');
    }
  }

  deleteSession({ keepalive = false } = {}) {
    if (!this.resourceUrl) return;
    const url = this.resourceUrl;
    this.resourceUrl = null;
    // Best effort: a 404 means the node already ended the session, and a node we cannot reach
    // releases the session itself once the peer connection drops.
    fetch(url, { method: 'DELETE', keepalive }).catch((err) => console.warn('DELETE failed', err));
  }

  close({ keepalive = false } = {}) {
    if (this.closed) return;
    this.closed = true;
    this.deleteSession({ keepalive });
    for (const timer of this.meters) clearInterval(timer);
    resetMeter(ui.micLevel);
    resetMeter(ui.agentLevel);
    this.channel?.close();
    this.pc?.close();
    if (this.micStream) stopTracks(this.micStream);
    this.audioContext.close();
    ui.remoteAudio.srcObject = null;
    setChatEnabled(false);
  }
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

async function connect() {
  clearError();
  resetSessionView();
  setState('connecting');
  const thisCall = new Call();
  call = thisCall;
  try {
    await thisCall.start();
  } catch (err) {
    if (thisCall.closed) return; // hung up meanwhile: whatever failed no longer matters
    showError(describeStartError(err));
    thisCall.close();
    setState('failed');
  }
}

function hangUp() {
  call?.close();
  call = null;
  setState('closed');
}

function iceServersFromQuery() {
  const raw = new URLSearchParams(window.location.search).get('ice');
  // Without ICE servers the browser offers host candidates only: enough when the node is on this host or LAN.
  if (!raw) return [];
  let servers;
  try {
    servers = JSON.parse(raw);
  } catch {
    throw new Error('?ice= is not JSON; expected e.g. [{"urls":"stun:stun.example.org:3478"}]');
  }
  if (!Array.isArray(servers)) throw new Error('?ice= must be a JSON array of RTCIceServer objects');
  return servers;
}

function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    // An unreachable STUN/TURN server can keep gathering going for a long time: offer what we have by then.
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function describeHttpError(response) {
  let message = response.statusText;
  try {
    const body = await response.json();
    message = body.error?.message ?? message;
  } catch {
    // Not the JSON error body (e.g. a proxy's HTML page): the status text is all we have.
  }
  const retryAfter = response.headers.get('Retry-After');
  const retry = retryAfter ? ` Try again in ${retryAfter} s.` : '';
  return `The server answered ${response.status}: ${message.replace(/\.$/, '')}.${retry}`;
}

function describeStartError(err) {
  if (err.name === 'NotAllowedError') return 'Microphone access was denied.';
  if (err.name === 'NotFoundError') return 'No microphone was found.';
  return err.message || String(err);
}

// ------------------------------------------------------------------------------------------ server events

// Session time of the latest event and when it arrived: lets typed messages be placed on the same clock.
let clock = { tMs: 0, at: performance.now() };
let pendingUserEntry = null; // the user utterance whose partial hypothesis is on screen
let speakingEntry = null; // the transcript entry of the agent utterance being spoken

function onServerMessage(data) {
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    showError('The server sent an event that is not JSON.');
    return;
  }
  microturn.events.push(event);
  if (microturn.events.length > MAX_EVENTS) microturn.events.shift();
  if (typeof event.t_ms === 'number') clock = { tMs: event.t_ms, at: performance.now() };

  switch (event.type) {
    case 'session.started':
      microturn.sessionId = event.session_id;
      ui.sessionId.textContent = `session ${event.session_id} · ${event.model}`;
      break;
    case 'transcript.input':
      showUserTranscript(event.text, event.final, event.t_ms);
      break;
    case 'response.audio.started':
      endAgentUtterance();
      break;
    case 'response.text':
      showAgentText(event.text, event.t_ms);
      break;
    case 'response.audio.stopped':
      endAgentUtterance(event.reason);
      break;
    case 'turn':
      addCell(event);
      break;
    case 'background.update':
      showBackgroundStatus(event.status);
      break;
    case 'error':
      showError(`${event.message} (${event.code})`);
      break;
    default:
      // Types a newer server may add: recorded in microturn.events only.
      break;
  }
}

function showUserTranscript(text, final, tMs) {
  if (!pendingUserEntry) {
    if (!text) return;
    pendingUserEntry = addEntry('user', text, tMs);
  }
  const entry = pendingUserEntry;
  entry.querySelector('.text').textContent = text;
  entry.classList.toggle('partial', !final);
  entry.classList.toggle('final', final);
  if (final) {
    pendingUserEntry = null;
    if (!text) entry.remove(); // the recogniser dropped the utterance (e.g. it was noise)
  }
  scrollTranscript();
}

// The agent's text comes phrase by phrase as it speaks them: one utterance, one transcript entry.
function showAgentText(text, tMs) {
  if (speakingEntry) {
    speakingEntry.querySelector('.text').append(` ${text}`);
    scrollTranscript();
  } else {
    speakingEntry = addEntry('agent', text, tMs);
    speakingEntry.classList.add('speaking');
  }
}

function endAgentUtterance(reason) {
  speakingEntry?.classList.remove('speaking');
  if (reason === 'interrupted') speakingEntry?.classList.add('interrupted');
  speakingEntry = null;
}

function addEntry(who, text, tMs) {
  transcriptPlaceholder.remove();
  const entry = document.createElement('li');
  entry.className = `entry ${who}`;
  entry.dataset.tMs = String(tMs);
  const head = document.createElement('div');
  head.className = 'entry-head';
  const name = document.createElement('span');
  name.className = 'who';
  name.textContent = who === 'user' ? 'You' : 'Agent';
  const time = document.createElement('time');
  time.textContent = formatSessionTime(tMs);
  time.title = `${tMs} ms into the session`;
  head.append(name, time);
  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = text;
  entry.append(head, body);
  ui.transcript.append(entry);
  scrollTranscript();
  return entry;
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

// Polls an AnalyserNode on `stream`; returns the timer to clear. A timer rather than requestAnimationFrame
// so that the peak keeps being measured in background tabs and headless browsers.
function startMeter(audioContext, stream, element, onPeak) {
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 2048;
  audioContext.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const bar = element.firstElementChild;
  let shown = 0;
  return setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const s of samples) peak = Math.max(peak, Math.abs(s));
    onPeak(peak);
    // Fast attack, slow release: a bar that jumps with every syllable is hard to read.
    shown = Math.max(peak, shown * 0.85);
    const db = shown > 0 ? 20 * Math.log10(shown) : METER_FLOOR_DB;
    const percent = Math.round(100 * Math.min(1, Math.max(0, 1 - db / METER_FLOOR_DB)));
    bar.style.width = `${percent}%`;
    element.setAttribute('aria-valuenow', String(percent));
  }, METER_INTERVAL_MS);
}

function resetMeter(element) {
  element.firstElementChild.style.width = '0%';
  element.setAttribute('aria-valuenow', '0');
}

// ---------------------------------------------------------------------------------------------- page state

function setState(state) {
  microturn.state = state;
  document.body.dataset.state = state;
  ui.stateLabel.textContent = state;
  const inCall = state === 'connecting' || state === 'connected' || state === 'disconnected';
  ui.connect.textContent = inCall ? 'Hang up' : 'Connect';
  ui.connect.classList.toggle('danger', inCall);
}

function setChatEnabled(enabled) {
  for (const control of [...ui.textForm.elements, ui.instructionsForm.querySelector('button')]) {
    control.disabled = !enabled;
  }
}

function showError(message) {
  microturn.lastError = message;
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function clearError() {
  microturn.lastError = null;
  ui.error.hidden = true;
  ui.error.textContent = '';
}

function resetSessionView() {
  microturn.sessionId = null;
  microturn.events = [];
  microturn.receivedAudioPeak = 0;
  microturn.sentAudioPeak = 0;
  ui.sessionId.textContent = '';
  ui.transcript.replaceChildren(transcriptPlaceholder);
  ui.strip.replaceChildren();
  pendingUserEntry = null;
  speakingEntry = null;
  clock = { tMs: 0, at: performance.now() };
}

// ---------------------------------------------------------------------------------------------- wiring

ui.connect.addEventListener('click', () => (call && !call.closed ? hangUp() : connect()));

ui.textForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.textInput.value.trim();
  if (!text || !call?.send({ type: 'input.text', text })) return;
  const entry = addEntry('user', text, sessionTimeNow());
  entry.classList.add('typed', 'final');
  ui.textInput.value = '';
});

ui.instructionsForm.addEventListener('submit', (e) => {
  e.preventDefault();
  call?.sendInstructions();
});

// Closing the tab should free the node's session slot now rather than when ICE times out.
window.addEventListener('pagehide', () => call?.close({ keepalive: true }));
