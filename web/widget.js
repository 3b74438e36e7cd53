// <microturn-agent>: a microturn voice agent on any web page, in one tag.
//
//   <script type="module" src="https://agent.example.com/widget.js"></script>
//   <microturn-agent server="https://agent.example.com"></microturn-agent>
//
// This file is the browser's only implementation of the client protocol (docs/protocol.md): the demo page
// at / is this element plus panels. MicroturnClient is the protocol without any UI (exported for pages
// that draw their own); MicroturnAgentElement is the widget. docs/widget.md lists attributes, methods and
// events. No dependencies and no build step: the node serves this file as it is, at /widget.js.

const ICE_GATHERING_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 20000; // answer received → media flowing; a blocked UDP path never gets there
const LEVEL_INTERVAL_MS = 50;
const CAPTION_LINES = 3; // live captions are subtitles, not a chat log: the last few lines only
const MAX_TEXT_CHARS = 2000; // docs/protocol.md: input.text
const MAX_INSTRUCTIONS_CHARS = 8000; // docs/protocol.md: session.update

// Where the node is when no `server` attribute says: where this module was loaded from (the node serves
// it), including a path prefix when the node sits behind a proxy under one.
const MODULE_BASE = new URL('.', import.meta.url).href;

/** An error with a stable `code` (docs/widget.md lists them) and a message meant for the person calling. */
export class MicroturnError extends Error {
  constructor(code, message, { status = null, fatal = true } = {}) {
    super(message);
    this.name = 'MicroturnError';
    this.code = code;
    this.status = status; // the HTTP status when the server refused
    this.fatal = fatal; // false: reported, but the call goes on
  }
}

// ================================================================================================ protocol

/**
 * One call at a time with a microturn node: devices, the peer connection, WHIP-style signalling, the
 * `events` data channel. Events (CustomEvent, details as in docs/widget.md): `state`, `transcript`,
 * `seen` (what the camera showed), `message` (every server event as it came), `error`.
 */
export class MicroturnClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.server  the node's base URL
   * @param {() => Promise<string|null>} [options.getToken]  a session token for this call, if one is needed
   * @param {string} [options.instructions]  sent as session.update when the call starts
   * @param {string} [options.model]  the model the page expects; another one ends the call
   * @param {boolean} [options.camera]  send the camera too
   * @param {RTCIceServer[]} [options.iceServers]  STUN/TURN, when the node is not directly reachable
   */
  constructor(options) {
    super();
    this.options = { getToken: async () => null, instructions: '', iceServers: [], ...options };
    this.state = 'idle';
    this.sessionId = null;
    this.levels = { user: 0, agent: 0 }; // peak of the last 50 ms of each side's audio, 0..1
    this.localStream = null;
    this.remoteStream = null;
    this.closed = false;
    this.pc = null;
    this.channel = null;
    this.resourceUrl = null; // the session's Location: DELETE it on hang-up
    this.meters = [];
    this.clock = { tMs: 0, at: performance.now() }; // the session time of the latest server event
    this.utterances = { user: null, agent: null }; // the caption each side is in the middle of
    this.utteranceCount = 0;
    this.endedByServer = false;
    this.connectedOnce = null;
    this.failure = null; // the MicroturnError that ended the call, if one did
  }

  /** Ask for the devices, create the session, and resolve once media flows (or the call was stopped). */
  async start() {
    this.setState('connecting');
    // Both made while the click that started the call still counts as a user gesture, so that the
    // browser's autoplay policy lets them play.
    this.audioContext = new AudioContext();
    this.audio = new Audio();
    try {
      await this.connect();
    } catch (err) {
      this.fail(toMicroturnError(err)); // ignored when stopped meanwhile: what failed no longer matters
    }
    // Stopped meanwhile: resolve. Failed, here or by an event meanwhile (e.g. model_mismatch): reject.
    if (this.failure) throw this.failure;
  }

  async connect() {
    const { server, camera, iceServers } = this.options;
    const stream = await openDevices(camera);
    if (this.closed) {
      // Stopped while the permission prompt was open: stop() could not release these devices yet.
      stopTracks(stream);
      return;
    }
    this.localStream = stream;
    this.meters.push(this.meter(stream, (peak) => (this.levels.user = peak)));

    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    this.connectedOnce = new Promise((resolve, reject) => {
      this.settleConnected = { resolve, reject };
    });
    this.connectedOnce.catch(() => {}); // a failure before connect() awaits it is still awaited, later
    pc.addEventListener('connectionstatechange', () => this.onConnectionState());
    pc.addEventListener('track', (e) => this.onRemoteTrack(e));
    // sendrecv: the agent's voice comes back on the same m-line (docs/protocol.md).
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendrecv', streams: [stream] });
    const [video] = stream.getVideoTracks();
    if (video) pc.addTransceiver(video, { direction: 'sendonly', streams: [stream] });
    // The channel must exist before the offer, or the offer carries no SCTP m-line for it.
    this.channel = pc.createDataChannel('events');
    this.channel.addEventListener('open', () => this.onChannelOpen());
    this.channel.addEventListener('close', () => this.onChannelClosed());
    this.channel.addEventListener('message', (e) => this.onServerMessage(e.data));

    await pc.setLocalDescription(await pc.createOffer());
    // The node takes no trickled candidates (PATCH answers 405): the offer must hold them all.
    await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
    if (this.closed) return;
    // Fetched last, just before it is used: tokens live minutes, a permission prompt can take longer.
    const token = await this.options.getToken();
    if (this.closed) return;

    const url = new URL('v1/sessions', withSlash(server)).href;
    const headers = { 'Content-Type': 'application/sdp' };
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
    } catch {
      // The browser hides why (CORS refusals look like network errors to the page): name both causes.
      throw new MicroturnError(
        'unreachable',
        `Could not reach the agent at ${new URL(url).origin}, or it does not take calls from this page ` +
          `(${location.origin}): the node must be running and list this origin in --allowed-origins.`,
      );
    }
    if (!response.ok) throw await httpError(response);
    const sessionUrl = response.headers.get('Location');
    this.resourceUrl = sessionUrl ? new URL(sessionUrl, response.url).href : null;
    const answer = await response.text();
    if (this.closed) {
      this.deleteSession(); // stopped while the node was answering: release the session it just made
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    const timer = setTimeout(
      () =>
        this.settleConnected.reject(
          new MicroturnError(
            'connection_failed',
            'The call was set up but no audio path opened within 20 s: a firewall may block the node\'s ' +
              'UDP ports (a TURN server in ice-servers gets through).',
          ),
        ),
      CONNECT_TIMEOUT_MS,
    );
    try {
      await this.connectedOnce;
    } finally {
      clearTimeout(timer);
    }
  }

  onConnectionState() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    if (state === 'connected') {
      this.settleConnected.resolve();
      this.setState('connected');
    } else if (state === 'disconnected') {
      this.setState('reconnecting'); // ICE may find its way back on its own within seconds
    } else if (state === 'failed') {
      const error = new MicroturnError(
        'connection_failed',
        'The media connection failed (ICE/DTLS): the node may not be reachable over UDP from here.',
      );
      if (this.state === 'connecting') {
        this.settleConnected.reject(error); // start() reports it
      } else {
        this.fail(error);
      }
    }
  }

  onRemoteTrack(event) {
    if (event.track.kind !== 'audio') return;
    this.remoteStream = event.streams[0] ?? new MediaStream([event.track]);
    // Chrome feeds a remote WebRTC stream into WebAudio only while a media element plays it: this element
    // is both what you hear and what makes the agent's level measurable.
    this.audio.srcObject = this.remoteStream;
    this.audio.play().catch(() => this.waitForGestureToPlay());
    this.meters.push(this.meter(this.remoteStream, (peak) => (this.levels.agent = peak)));
  }

  // start() outside a user gesture (e.g. on page load) leaves the browser's autoplay policy blocking the
  // agent's voice: say so, and play at the next click anywhere on the page.
  waitForGestureToPlay() {
    this.emit('error', {
      code: 'autoplay_blocked',
      message: "The browser blocked the agent's voice until you click the page.",
      fatal: false,
    });
    const resume = () => {
      if (this.closed) return;
      this.audioContext.resume();
      this.audio.play().catch(() => {});
    };
    document.addEventListener('pointerdown', resume, { once: true, capture: true });
  }

  onChannelOpen() {
    if (this.options.instructions) this.setInstructions(this.options.instructions);
  }

  onChannelClosed() {
    if (this.closed) return;
    if (this.endedByServer) {
      this.stop({ deleteSession: false });
    } else {
      // Not us, and not the agent saying goodbye: the node dropped the session or the network did.
      this.fail(
        new MicroturnError(
          'connection_lost',
          'The call dropped: the server ended it or the connection was lost.',
        ),
      );
    }
  }

  onServerMessage(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      const message = 'The server sent an event that is not JSON.';
      this.emit('error', { code: 'invalid_event', message, fatal: false });
      return;
    }
    if (typeof event.t_ms === 'number') this.clock = { tMs: event.t_ms, at: performance.now() };
    this.emit('message', { event });
    switch (event.type) {
      case 'session.started':
        this.sessionId = event.session_id;
        if (this.options.model && event.model !== this.options.model) {
          this.fail(
            new MicroturnError(
              'model_mismatch',
              `This agent runs the model "${event.model}", not "${this.options.model}" as the page asked.`,
            ),
          );
        }
        break;
      case 'transcript.input':
        this.caption('user', event.text, event.final, event.t_ms);
        break;
      case 'response.audio.started':
        this.endAgentUtterance(false);
        break;
      case 'response.text':
        // The agent's words come phrase by phrase as it says them: one utterance, one caption.
        this.caption('agent', joinText(this.utterances.agent?.text, event.text), false, event.t_ms);
        break;
      case 'response.audio.stopped':
        this.endAgentUtterance(event.reason === 'interrupted');
        break;
      case 'camera.seen':
        // What the model's camera features saw ("repetitions so far: 5"): shown whatever the agent says.
        if (event.text) this.emit('seen', { text: String(event.text), tMs: event.t_ms });
        break;
      case 'session.ended':
        this.endedByServer = true; // the channel closes next; that is the end of the call, not a fault
        break;
      case 'error':
        this.emit('error', { code: event.code, message: event.message, fatal: false });
        break;
      default:
        break; // turn, background.update, and what a newer server may add: in `message` only
    }
  }

  /** Emit a caption (`text` is the whole utterance so far); `final` closes the utterance. */
  caption(role, text, final, tMs, extra = {}) {
    let utterance = this.utterances[role];
    if (!utterance) {
      if (!text) return; // nothing said, nothing to show
      utterance = { id: `${role}-${++this.utteranceCount}`, text: '', tMs };
      this.utterances[role] = utterance;
    }
    utterance.text = text;
    if (final) this.utterances[role] = null;
    // A final user caption with empty text withdraws the partial one: the recogniser decided it was noise.
    this.emit('transcript', { id: utterance.id, role, text, final, tMs: utterance.tMs, ...extra });
  }

  endAgentUtterance(interrupted) {
    const utterance = this.utterances.agent;
    if (utterance) this.caption('agent', utterance.text, true, utterance.tMs, { interrupted });
  }

  /** Typed input; false when the call is not up. */
  send(text) {
    text = String(text).trim().slice(0, MAX_TEXT_CHARS);
    if (!text || !this.sendEvent({ type: 'input.text', text })) return false;
    // Its own caption: a spoken utterance may be half-recognised at the same time.
    const id = `user-${++this.utteranceCount}`;
    this.emit('transcript', { id, role: 'user', text, final: true, tMs: this.sessionTimeNow(), typed: true });
    return true;
  }

  /** New instructions: sent now when the call is up, else when it starts; true when sent now. */
  setInstructions(instructions) {
    this.options.instructions = String(instructions ?? '').slice(0, MAX_INSTRUCTIONS_CHARS);
    return this.sendEvent({ type: 'session.update', instructions: this.options.instructions });
  }

  sendEvent(message) {
    if (this.channel?.readyState !== 'open') return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  get muted() {
    return this.localStream?.getAudioTracks().some((t) => !t.enabled) ?? false;
  }

  set muted(muted) {
    // A disabled track sends silence: the node keeps its clock and hears nothing.
    for (const track of this.localStream?.getAudioTracks() ?? []) track.enabled = !muted;
  }

  get cameraOff() {
    return this.localStream?.getVideoTracks().some((t) => !t.enabled) ?? false;
  }

  set cameraOff(off) {
    for (const track of this.localStream?.getVideoTracks() ?? []) track.enabled = !off;
  }

  sessionTimeNow() {
    return Math.round(this.clock.tMs + performance.now() - this.clock.at);
  }

  /** Hang up and release everything; `keepalive` lets the DELETE outlive a closing page. */
  stop({ keepalive = false, deleteSession = true } = {}) {
    if (this.closed) return;
    this.release({ keepalive, deleteSession });
    this.setState('ended');
  }

  fail(error) {
    if (this.closed) return;
    this.failure = error;
    this.release({ keepalive: false, deleteSession: true });
    this.emit('error', { code: error.code, message: error.message, status: error.status, fatal: true });
    this.setState('failed');
  }

  release({ keepalive, deleteSession }) {
    this.closed = true;
    this.settleConnected?.resolve(); // a start() still waiting is over
    if (deleteSession) this.deleteSession({ keepalive });
    for (const timer of this.meters) clearInterval(timer);
    this.levels = { user: 0, agent: 0 };
    this.channel?.close();
    this.pc?.close();
    if (this.localStream) stopTracks(this.localStream);
    this.audioContext?.close();
    if (this.audio) this.audio.srcObject = null;
  }

  deleteSession({ keepalive = false } = {}) {
    if (!this.resourceUrl) return;
    const url = this.resourceUrl;
    this.resourceUrl = null;
    // Best effort: a 404 means the node already ended the session, and a node we cannot reach releases
    // it itself once the media stops.
    fetch(url, { method: 'DELETE', keepalive }).catch(() => {});
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit('state', { state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // Polls an AnalyserNode on `stream`; returns the timer. A timer rather than requestAnimationFrame, so
  // that levels keep being measured in background tabs.
  meter(stream, onPeak) {
    const analyser = this.audioContext.createAnalyser();
    analyser.fftSize = 2048;
    this.audioContext.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    return setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      onPeak(peak);
    }, LEVEL_INTERVAL_MS);
  }
}

async function openDevices(camera) {
  if (!window.isSecureContext) {
    throw new MicroturnError(
      'insecure_context',
      'The microphone is only available to secure pages: open this page over https:// (or on localhost).',
    );
  }
  if (!navigator.mediaDevices?.getUserMedia || !window.RTCPeerConnection) {
    throw new MicroturnError(
      'unsupported',
      'This browser cannot make calls: it has no WebRTC or microphone access.',
    );
  }
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  try {
    const video = camera ? { width: 640, height: 480 } : false;
    return await navigator.mediaDevices.getUserMedia({ audio, video });
  } catch (err) {
    // A missing or busy camera should not cost the call: go on with voice only, and say so.
    if (camera && ['NotFoundError', 'NotReadableError', 'OverconstrainedError'].includes(err.name)) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio }).catch((e) => {
        throw deviceError(e, false);
      });
      stream.cameraError = deviceError(err, true);
      return stream;
    }
    throw deviceError(err, camera);
  }
}

function deviceError(err, camera) {
  const what = camera ? 'camera' : 'microphone';
  const devices = camera ? 'Camera or microphone' : 'Microphone';
  switch (err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      // A frame without allow="microphone" fails exactly like a denied prompt: tell the two apart.
      if (document.featurePolicy && !document.featurePolicy.allowsFeature('microphone')) {
        return new MicroturnError(
          'permission_denied',
          'This page is in a frame that may not use the microphone: the <iframe> needs allow="microphone".',
        );
      }
      return new MicroturnError(
        'permission_denied',
        `${devices} access was denied. Allow it for this site (the icon in the address bar) and call again.`,
      );
    case 'NotFoundError':
    case 'OverconstrainedError':
      return new MicroturnError('device_not_found', `No ${what} was found. Connect one and call again.`);
    case 'NotReadableError':
    case 'AbortError':
      return new MicroturnError(
        'device_busy',
        `The ${what} could not be started: another application may be using it.`,
      );
    default:
      return new MicroturnError(
        'device_error',
        `The ${what} could not be opened: ${err.message || err.name}`,
      );
  }
}

function toMicroturnError(err) {
  return err instanceof MicroturnError ? err : new MicroturnError('error', err?.message || String(err));
}

async function httpError(response) {
  let code = `http_${response.status}`;
  let message = response.statusText;
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // Not the node's JSON error (e.g. a proxy's HTML page): the status text is all there is.
  }
  const retryAfter = response.headers.get('Retry-After');
  const retry = retryAfter ? ` Try again in ${retryAfter} s.` : '';
  return new MicroturnError(
    code,
    `The agent's server refused the call (${response.status}): ${message.replace(/\.$/, '')}.${retry}`,
    { status: response.status },
  );
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
    // An unreachable STUN/TURN server can keep gathering going for long: offer what we have by then.
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

function withSlash(url) {
  return url.endsWith('/') ? url : `${url}/`;
}

function joinText(before, phrase) {
  return before ? `${before} ${phrase}` : phrase;
}

/** What a camera line is about, numbers left out ("repetitions so far: #"); the demo page uses it too. */
export function seenKey(text) {
  return String(text).replace(/\d+/g, '#');
}

// ================================================================================================ element

const ICONS = {
  // Material Symbols paths (Apache-2.0), 24×24.
  call: 'M6.62 10.79a15.05 15.05 0 0 0 6.59 6.59l2.2-2.2a1 1 0 0 1 1.02-.24c1.12.37 2.33.57 3.57.57a1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1.02l-2.2 2.2z',
  hangup: 'M12 9c-1.6 0-3.15.25-4.6.72v3.1c0 .39-.23.74-.56.9-.98.49-1.87 1.12-2.66 1.85a.99.99 0 0 1-1.41-.01L.29 13.08a.996.996 0 0 1 0-1.41C3.34 8.78 7.46 7 12 7s8.66 1.78 11.71 4.67a1 1 0 0 1 0 1.41l-2.48 2.48a1 1 0 0 1-1.41.01c-.79-.74-1.69-1.36-2.67-1.85a1 1 0 0 1-.56-.9v-3.1A15.3 15.3 0 0 0 12 9z',
  mic: 'M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5.3-3c0 3-2.54 5.1-5.3 5.1S6.7 14 6.7 11H5c0 3.41 2.72 6.23 6 6.72V21h2v-3.28c3.28-.48 6-3.3 6-6.72h-1.7z',
  micOff: 'M19 11h-1.7c0 .74-.16 1.43-.43 2.05l1.23 1.23c.56-.98.9-2.09.9-3.28zm-4.02.17V5a3 3 0 0 0-6 0v.18l5.98 5.99zM4.27 3 3 4.27l6.01 6.01V11a3 3 0 0 0 3.64 2.92l1.66 1.66c-.71.33-1.5.52-2.31.52-2.76 0-5.3-2.1-5.3-5.1H5c0 3.41 2.72 6.23 6 6.72V21h2v-3.28c.91-.13 1.77-.45 2.54-.9L19.73 21 21 19.73 4.27 3z',
  camera: 'M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11l-4 4z',
  cameraOff: 'M21 6.5l-4 4V7a1 1 0 0 0-1-1H9.82L21 17.18V6.5zM3.27 2 2 3.27 4.73 6H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12c.21 0 .39-.08.54-.18L19.73 21 21 19.73 3.27 2z',
};

const icon = (name) => `<svg viewBox="0 0 24 24" aria-hidden="true"><path d="${ICONS[name]}"/></svg>`;

const TEMPLATE = document.createElement('template');
TEMPLATE.innerHTML = `
<style>
  :host {
    display: block; max-width: 420px;
    font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  }
  :host([hidden]), [hidden] { display: none !important; }
  :host([position="bottom-right"]), :host([position="bottom-left"]) {
    position: fixed; bottom: 20px; z-index: 2147483000; width: min(360px, calc(100vw - 40px));
  }
  :host([position="bottom-right"]) { right: 20px; }
  :host([position="bottom-left"]) { left: 20px; }

  .widget {
    --accent: var(--microturn-accent, #2563eb);
    --bg: #ffffff; --fg: #111827; --muted: #6b7280; --border: #e5e7eb; --soft: #f3f4f6;
    --danger: #dc2626; --error-bg: #fef2f2; --error-fg: #991b1b;
    color-scheme: light;
    background: var(--bg); color: var(--fg);
    border: 1px solid var(--border); border-radius: 16px;
    box-shadow: 0 6px 24px rgb(0 0 0 / 0.08);
    overflow: hidden;
  }
  .widget.dark {
    --bg: #111827; --fg: #f9fafb; --muted: #9ca3af; --border: #374151; --soft: #1f2937;
    --error-bg: #3b1111; --error-fg: #fecaca;
    color-scheme: dark;
  }

  .bar { display: flex; align-items: center; gap: 12px; padding: 12px 14px; }
  .orb {
    flex: none; width: 40px; height: 40px; border-radius: 50%;
    background:
      radial-gradient(circle at 35% 35%, color-mix(in srgb, var(--accent) 45%, white), var(--accent));
    box-shadow: 0 0 0 calc(var(--level, 0) * 10px) color-mix(in srgb, var(--accent) 25%, transparent);
    transition: box-shadow 80ms linear;
  }
  .widget:not([data-state="connected"]) .orb { filter: saturate(0.4); opacity: 0.8; }
  .widget[data-state="connecting"] .orb,
  .widget[data-state="reconnecting"] .orb { animation: pulse 1s infinite; }
  @keyframes pulse { 50% { opacity: 0.35; } }

  .status { flex: 1; min-width: 0; display: flex; flex-direction: column; }
  .title { font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .detail { color: var(--muted); font-size: 0.85em; }

  button {
    font: inherit; cursor: pointer; border-radius: 999px; border: 1px solid var(--border);
    background: var(--soft); color: var(--fg);
    display: inline-flex; align-items: center; justify-content: center; gap: 6px;
  }
  button:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
  button svg { width: 20px; height: 20px; fill: currentColor; }
  .call {
    background: var(--accent); border-color: var(--accent); color: #fff;
    font-weight: 600; padding: 8px 16px;
  }
  .call:disabled { opacity: 0.6; cursor: default; }
  .round { width: 40px; height: 40px; padding: 0; }
  .round[aria-pressed="true"] { background: var(--fg); color: var(--bg); }
  .hangup { background: var(--danger); border-color: var(--danger); color: #fff; }

  .panel {
    border-top: 1px solid var(--border); padding: 10px 14px 12px;
    display: flex; flex-direction: column; gap: 8px;
  }
  .captions { display: flex; flex-direction: column; gap: 4px; margin: 0; padding: 0; list-style: none; }
  .captions:empty { display: none; }
  .line .who { font-weight: 600; margin-right: 6px; }
  .line.user .who { color: var(--muted); }
  .line.agent .who { color: var(--accent); }
  .line.partial .text { color: var(--muted); font-style: italic; }
  .line.interrupted .text::after { content: " —"; color: var(--muted); }
  .line.camera { color: var(--muted); font-size: 0.9em; }
  .line.camera .who { display: inline-flex; vertical-align: -3px; }
  .line.camera svg { width: 16px; height: 16px; fill: currentColor; }
  .notice {
    margin: 0; padding: 8px 10px; border-radius: 8px;
    background: var(--error-bg); color: var(--error-fg); font-size: 0.9em;
  }
  .self-view {
    width: 120px; aspect-ratio: 4 / 3; border-radius: 8px;
    background: #000; object-fit: cover; align-self: flex-end;
    transform: scaleX(-1); /* a mirror: what people expect of their own picture */
  }
</style>
<div class="widget" part="container" data-state="idle">
  <div class="bar">
    <span class="orb" part="orb" aria-hidden="true"></span>
    <div class="status">
      <span class="title" part="title"></span>
      <span class="detail" part="status" role="status" aria-live="polite"></span>
    </div>
    <button class="call" part="call-button" type="button">${icon('call')}<span class="label"></span></button>
    <button class="round mute" part="mute-button" type="button" aria-pressed="false" hidden></button>
    <button class="round camera" part="camera-button" type="button" aria-pressed="false" hidden></button>
    <button class="round hangup" part="hangup-button" type="button" title="Hang up" aria-label="Hang up"
            hidden>${icon('hangup')}</button>
  </div>
  <div class="panel" part="panel" hidden>
    <video class="self-view" part="self-view" muted playsinline autoplay hidden
           aria-label="Your camera (preview)"></video>
    <ol class="captions" part="captions" aria-live="polite" aria-label="Live captions"></ol>
    <p class="notice" part="error" role="alert" hidden></p>
  </div>
</div>`;

const STATE_TEXT = {
  idle: 'Press to talk',
  connecting: 'Connecting…',
  connected: 'Listening',
  reconnecting: 'Reconnecting…',
  ended: 'Call ended',
  failed: 'Call failed',
};

const IN_CALL = new Set(['connecting', 'connected', 'reconnecting']);

// Properties mirrored by attributes (attribute → property), as custom elements conventionally do.
const STRING_PROPERTIES = {
  server: 'server',
  instructions: 'instructions',
  model: 'model',
  token: 'token',
  'token-url': 'tokenUrl',
  'ice-servers': 'iceServers',
  theme: 'theme',
  accent: 'accent',
  position: 'position',
  label: 'label',
  'agent-name': 'agentName',
  captions: 'captions',
};

export class MicroturnAgentElement extends HTMLElement {
  static observedAttributes = [...Object.keys(STRING_PROPERTIES), 'camera'];

  #client = null;
  #ui;
  #captionLines = new Map(); // transcript id → its caption line
  #levelFrame = 0;
  #starting = Promise.resolve(); // the running call's start(), for a second start() during it
  #speaking = false; // the agent is saying something (between response.audio.started and .stopped)
  #cameraOn = false; // the call sends a live camera picture (microturn-camera says when this changes)
  #onPageHide = () => this.#client?.stop({ keepalive: true }); // free the node's slot now, not at ICE timeout

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.append(TEMPLATE.content.cloneNode(true));
    const $ = (selector) => root.querySelector(selector);
    this.#ui = {
      widget: $('.widget'),
      title: $('.title'),
      detail: $('.detail'),
      call: $('.call'),
      label: $('.call .label'),
      mute: $('.mute'),
      camera: $('.camera'),
      hangup: $('.hangup'),
      panel: $('.panel'),
      selfView: $('.self-view'),
      captions: $('.captions'),
      notice: $('.notice'),
    };
    this.#ui.call.addEventListener('click', () => this.start().catch(() => {})); // reported as events
    this.#ui.hangup.addEventListener('click', () => this.stop());
    this.#ui.mute.addEventListener('click', () => (this.muted = !this.muted));
    this.#ui.camera.addEventListener('click', () => (this.cameraOff = !this.cameraOff));
  }

  connectedCallback() {
    // A property set before this module loaded sits on the instance and hides the accessor: re-set it.
    for (const property of [...Object.values(STRING_PROPERTIES), 'camera']) {
      if (Object.hasOwn(this, property)) {
        const value = this[property];
        delete this[property];
        this[property] = value;
      }
    }
    window.addEventListener('pagehide', this.#onPageHide);
    this.#render();
  }

  disconnectedCallback() {
    window.removeEventListener('pagehide', this.#onPageHide);
    // Moved rather than removed (reconnected in the same task): the call goes on.
    queueMicrotask(() => {
      if (!this.isConnected) this.stop();
    });
  }

  attributeChangedCallback(name, _old, value) {
    if (name === 'instructions' && this.#client && IN_CALL.has(this.#client.state)) {
      this.#client.setInstructions(value ?? '');
    }
    this.#render();
  }

  // ------------------------------------------------------------------------------------------ public API

  /** The call's state: idle, connecting, connected, reconnecting, ended or failed. */
  get state() {
    return this.#client?.state ?? 'idle';
  }

  get sessionId() {
    return this.#client?.sessionId ?? null;
  }

  /** The latest audio peaks (0..1) of the microphone (`user`) and of the agent's voice (`agent`). */
  get levels() {
    return { ...(this.#client?.levels ?? { user: 0, agent: 0 }) };
  }

  get muted() {
    return this.#client?.muted ?? false;
  }

  set muted(muted) {
    if (this.#client) this.#client.muted = Boolean(muted);
    this.#render();
  }

  get camera() {
    return this.hasAttribute('camera');
  }

  set camera(on) {
    this.toggleAttribute('camera', Boolean(on));
  }

  /** In a call with the camera: true while it is turned off (the track sends black frames). */
  get cameraOff() {
    return this.#client?.cameraOff ?? false;
  }

  set cameraOff(off) {
    if (this.#client) this.#client.cameraOff = Boolean(off);
    this.#render();
  }

  /** Start a call; resolves once media flows, rejects with a MicroturnError (also sent as an event). */
  start() {
    if (this.#client && IN_CALL.has(this.#client.state)) return this.#starting;
    this.#captionLines.clear();
    this.#ui.captions.replaceChildren();
    this.#showNotice(null);
    let iceServers;
    try {
      iceServers = this.iceServers ? JSON.parse(this.iceServers) : [];
      if (!Array.isArray(iceServers)) throw new Error('not an array');
    } catch {
      const error = new MicroturnError(
        'invalid_attribute',
        'The ice-servers attribute must be a JSON array, e.g. [{"urls":"stun:stun.example.org:3478"}].',
      );
      this.#onError({ code: error.code, message: error.message, fatal: true });
      return Promise.reject(error);
    }
    const client = new MicroturnClient({
      server: this.server || MODULE_BASE,
      getToken: () => this.#getToken(),
      instructions: this.instructions ?? '',
      model: this.model || undefined,
      camera: this.camera,
      iceServers,
    });
    this.#client = client;
    client.addEventListener('state', (e) => this.#onState(client, e.detail));
    client.addEventListener('transcript', (e) => this.#onTranscript(e.detail));
    client.addEventListener('seen', (e) => this.#onSeen(e.detail));
    client.addEventListener('message', (e) => this.#onMessage(e.detail));
    client.addEventListener('error', (e) => this.#onError(e.detail));
    this.#starting = client.start();
    return this.#starting;
  }

  /** Hang up (no-op without a call). */
  stop() {
    this.#client?.stop();
  }

  /** Send typed text to the agent; false when no call is up. */
  send(text) {
    return this.#client?.send(text) ?? false;
  }

  /** Replace the agent's instructions, now if in a call and for the next calls; true when sent now. */
  setInstructions(text) {
    this.setAttribute('instructions', text ?? ''); // attributeChangedCallback sends it during a call
    return this.#client?.channel?.readyState === 'open';
  }

  // ------------------------------------------------------------------------------------------ internals

  async #getToken() {
    if (this.token) return this.token;
    if (!this.tokenUrl) return null;
    let response;
    try {
      // The embedding site's own backend, which holds the API key: same-origin cookies identify the visitor.
      response = await fetch(this.tokenUrl, { method: 'POST', headers: { Accept: 'application/json' } });
    } catch (err) {
      throw new MicroturnError(
        'token_failed',
        `Could not get a session token from ${this.tokenUrl}: ${err.message}`,
      );
    }
    if (!response.ok) {
      throw new MicroturnError(
        'token_failed',
        `Could not get a session token: ${this.tokenUrl} answered ${response.status}.`,
        { status: response.status },
      );
    }
    const body = await response.text();
    try {
      return JSON.parse(body).token; // the node's own /v1/tokens answer, passed through
    } catch {
      return body.trim(); // or the bare token
    }
  }

  #onState(client, { state }) {
    if (client !== this.#client) return; // an earlier call's late news
    if (state === 'connecting') this.#showNotice(null);
    if (state === 'connected' && client.localStream?.cameraError) {
      this.#showNotice(`${client.localStream.cameraError.message} The call goes on with voice only.`);
    }
    this.#ui.selfView.srcObject = IN_CALL.has(state) ? client.localStream : null;
    this.#speaking = false;
    this.#render();
    if (IN_CALL.has(state)) this.#animateLevel();
    this.#emit('microturn-state', { state });
  }

  #onMessage({ event }) {
    if (event.type === 'response.audio.started') this.#speaking = true;
    if (event.type === 'response.audio.stopped') this.#speaking = false;
    if (event.type.startsWith('response.audio.')) this.#render();
    this.#emit('microturn-message', { event });
  }

  #onTranscript(detail) {
    this.#showCaption(detail);
    this.#emit('microturn-transcript', detail);
  }

  #onSeen(detail) {
    this.#showSeen(detail);
    this.#emit('microturn-seen', detail);
  }

  #onError(detail) {
    this.#showNotice(detail.message);
    this.#emit('microturn-error', detail);
  }

  #emit(type, detail) {
    // Composed: a page listening on document hears the widget even though it lives in a shadow root.
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  #showCaption({ id, role, text, final, interrupted }) {
    let line = this.#captionLines.get(id);
    if (!text) {
      line?.remove(); // a withdrawn partial
      this.#captionLines.delete(id);
      return;
    }
    if (!line) {
      line = document.createElement('li');
      line.className = `line ${role}`;
      line.setAttribute('part', `caption ${role}`);
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = role === 'user' ? 'You' : this.agentName || 'Agent';
      const words = document.createElement('span');
      words.className = 'text';
      line.append(who, words);
      this.#ui.captions.append(line);
      this.#captionLines.set(id, line);
      while (this.#ui.captions.childElementCount > CAPTION_LINES) {
        const oldest = this.#ui.captions.firstElementChild;
        this.#captionLines.forEach((l, key) => l === oldest && this.#captionLines.delete(key));
        oldest.remove();
      }
    }
    line.querySelector('.text').textContent = text;
    line.classList.toggle('partial', !final);
    line.classList.toggle('final', final);
    line.classList.toggle('interrupted', Boolean(interrupted));
    this.#renderPanel();
  }

  // A camera line joins the captions with a camera icon; a count that goes on replaces its line (one
  // line that moves up, "repetitions so far: 4" -> 5, as in the agent's own conversation).
  #showSeen({ text }) {
    const key = seenKey(text);
    let line = this.#ui.captions.lastElementChild;
    if (!line?.classList.contains('camera') || line.dataset.key !== key) {
      line = document.createElement('li');
      line.className = 'line camera';
      line.setAttribute('part', 'caption camera');
      line.dataset.key = key;
      const who = document.createElement('span');
      who.className = 'who';
      who.innerHTML = icon('camera');
      who.title = 'Camera';
      who.setAttribute('role', 'img');
      who.setAttribute('aria-label', 'Camera:');
      const words = document.createElement('span');
      words.className = 'text';
      line.append(who, words);
      this.#ui.captions.append(line);
      while (this.#ui.captions.childElementCount > CAPTION_LINES) {
        const oldest = this.#ui.captions.firstElementChild;
        this.#captionLines.forEach((l, id) => l === oldest && this.#captionLines.delete(id));
        oldest.remove();
      }
    }
    line.querySelector('.text').textContent = text;
    this.#renderPanel();
  }

  #showNotice(message) {
    this.#ui.notice.textContent = message ?? '';
    this.#ui.notice.hidden = !message;
    this.#renderPanel();
  }

  #renderPanel() {
    const ui = this.#ui;
    const captions = this.captions !== 'off' && ui.captions.childElementCount > 0;
    ui.captions.hidden = this.captions === 'off';
    ui.panel.hidden = !captions && ui.notice.hidden && ui.selfView.hidden;
  }

  // Follows the voices while a call is up: the orb's halo grows with whoever is speaking.
  #animateLevel() {
    cancelAnimationFrame(this.#levelFrame);
    const tick = () => {
      const { user, agent } = this.levels;
      this.#ui.widget.style.setProperty('--level', Math.min(1, Math.max(user, agent) * 2).toFixed(2));
      if (IN_CALL.has(this.state)) {
        this.#levelFrame = requestAnimationFrame(tick);
      } else {
        this.#ui.widget.style.setProperty('--level', '0');
      }
    };
    this.#levelFrame = requestAnimationFrame(tick);
  }

  #render() {
    const ui = this.#ui;
    const state = this.state;
    const inCall = IN_CALL.has(state);
    ui.widget.dataset.state = state;
    ui.widget.classList.toggle(
      'dark',
      this.theme === 'dark' || (this.theme === 'auto' && matchMedia('(prefers-color-scheme: dark)').matches),
    );
    if (this.accent) ui.widget.style.setProperty('--accent', this.accent);
    else ui.widget.style.removeProperty('--accent');

    ui.title.textContent = this.agentName || 'Voice agent';
    let detail = STATE_TEXT[state];
    if (state === 'connected' && this.#speaking) detail = 'Speaking';
    if (state === 'connected' && this.muted) detail = 'Muted';
    ui.detail.textContent = detail;

    ui.call.hidden = inCall;
    ui.call.disabled = inCall;
    ui.label.textContent = this.label || (state === 'idle' ? 'Start a call' : 'Call again');
    ui.mute.hidden = !inCall;
    ui.hangup.hidden = !inCall;
    const muted = this.muted;
    ui.mute.setAttribute('aria-pressed', String(muted));
    ui.mute.innerHTML = icon(muted ? 'micOff' : 'mic');
    ui.mute.title = muted ? 'Unmute' : 'Mute';
    ui.mute.setAttribute('aria-label', ui.mute.title);
    const cameraOff = this.#client?.cameraOff ?? false;
    const withCamera = inCall && (this.#client?.localStream?.getVideoTracks().length ?? 0) > 0;
    ui.camera.hidden = !withCamera;
    ui.camera.setAttribute('aria-pressed', String(cameraOff));
    ui.camera.innerHTML = icon(cameraOff ? 'cameraOff' : 'camera');
    ui.camera.title = cameraOff ? 'Turn the camera on' : 'Turn the camera off';
    ui.camera.setAttribute('aria-label', ui.camera.title);
    ui.selfView.hidden = !withCamera || cameraOff;
    this.#renderPanel();
    if (withCamera && !cameraOff) ui.selfView.play().catch(() => {}); // hidden, a <video> may have paused
    if (this.#cameraOn !== (withCamera && !cameraOff)) {
      this.#cameraOn = !this.#cameraOn;
      this.#emit('microturn-camera', { on: this.#cameraOn });
    }
  }
}

for (const [attribute, property] of Object.entries(STRING_PROPERTIES)) {
  Object.defineProperty(MicroturnAgentElement.prototype, property, {
    get() {
      return this.getAttribute(attribute);
    },
    set(value) {
      if (value === null || value === undefined) this.removeAttribute(attribute);
      else this.setAttribute(attribute, String(value));
    },
    configurable: true,
  });
}

// Twice-loaded (two script tags, two versions): keep the first definition rather than throw.
if (!customElements.get('microturn-agent')) customElements.define('microturn-agent', MicroturnAgentElement);
