// app — parley's browser voice client: microphone -> WebSocket (parley.v1, docs/protocol.md)
// -> speaker, with the conversation shown as text. Query options (all optional):
//   ws=URL        the WebSocket URL (default: asked from GET /v1/server on this origin)
//   key=KEY       API key (sent as the parley.key.KEY subprotocol)
//   codec=pcm16   force PCM16 both ways (default: Opus through WebCodecs when available)
//   mode=ptt      start in push-to-talk (default hands-free, server VAD)
//   autostart=1   start without the button (needs an autoplay policy that allows audio)
//   max_tokens=N, seed=N, greedy=1   sampling for the session
// Counters for tests and curious people: window.parleyStats (also in the stats line).
import {Decoder, detectCodec, Encoder} from './lib/codec.js';
import {backoffMs, Conversation, describeClose, sessionStart} from './lib/conversation.js';
import {rmsDb} from './lib/pcm.js';
import {EnergyVad} from './lib/vad.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const opt = {
    ws: params.get('ws'),
    key: params.get('key') || params.get('api_key'),
    codec: params.get('codec'),
    mode: params.get('mode') === 'ptt' ? 'ptt' : 'vad',
    autostart: params.get('autostart') === '1',
    maxTokens: Number(params.get('max_tokens')) || null,
    seed: params.has('seed') ? Number(params.get('seed')) : null,
    greedy: params.get('greedy') === '1',
};
const MAX_BUFFERED = 256 * 1024; // bytes queued on the socket before audio frames are dropped

const st = {
    ctx: null,
    mic: null,
    capture: null,
    playback: null,
    ws: null,
    wsUrl: null,
    ready: false,
    stopping: false,
    everOpened: false,
    attempt: 0,
    retryTimer: null,
    codec: null,
    enc: null,
    dec: null,
    outRate: 48000,
    mode: opt.mode,
    talking: false,
    pttFrames: 0,
    silenceMs: 0,
    sentFrames: 0,
    frameTimes: new Float64Array(4096), // wall time of each 20 ms frame sent
    playActive: false,
    played: 0,
    totalPlayed: 0,
    underruns: 0,
    flushWaiters: new Map(),
    flushSeq: 0,
    bargeIns: 0,
    framesDropped: 0,
    bytesSent: 0,
};
const vad = new EnergyVad({ thresholdDb: -40, onsetMs: 120, hangMs: 400 });
const conv = new Conversation(render);

// ---- UI -----------------------------------------------------------------------------------

function setConn(state, text) {
    $('conn').dataset.state = state;
    $('conn-text').textContent = text;
    publish();
}

function showError(text) {
    const e = $('error');
    e.textContent = text || '';
    e.hidden = !text;
    if (text) st.lastError = text;
    publish();
}

function turnItem(id, who) {
    const dom = `turn-${id}-${who}`;
    let li = document.getElementById(dom);
    if (!li) {
        li = document.createElement('li');
        li.id = dom;
        li.className = who;
        li.innerHTML = `<span class="who">${who === 'user' ? 'You' : 'parley'}</span>` +
            '<span class="text"></span> <span class="note"></span>';
        $('transcript').appendChild(li);
    }
    return li;
}

function render(kind, t, msg) {
    if (kind === 'user') {
        turnItem(t.id, 'user').querySelector('.text').textContent = t.user;
        turnItem(t.id, 'answer'); // keeps the answer right under its question
        $('transcript').setAttribute('aria-busy', 'true');
    } else if (kind === 'answer') {
        const li = turnItem(t.id, 'answer');
        li.querySelector('.text').textContent = t.answer || '…';
        const notes = [];
        if (t.reason === 'cancelled')
            notes.push('(interrupted)');
        else if (t.reason && t.reason !== 'end')
            notes.push(`(${t.reason})`);
        if (t.latencyMs !== null) notes.push(`${t.latencyMs} ms`);
        li.querySelector('.note').textContent = notes.join(' ');
        if (t.reason) $('transcript').setAttribute('aria-busy', 'false');
        if (t.latencyMs !== null) {
            const server = t.serverTimings ? ` (server: commit → first audio ` +
                    `${t.serverTimings.first_audio_ms} ms)` :
                                             '';
            $('latency').textContent =
                `Latency (end of speech → first audio): ${t.latencyMs} ms${server}`;
        }
    } else if (kind === 'error' && !msg.fatal) {
        // (a fatal error is followed by a close, whose code and reason explain it)
        showError(`The server refused that: ${msg.message} (${msg.code}).`);
    } else if (kind === 'status' && msg.type === 'speech.started') {
        setConn('ready', 'Listening… (you are talking)');
    } else if (kind === 'status' && msg.type === 'speech.stopped') {
        setConn('ready', 'Thinking…');
        // audio_ms is where the server decided: after silence_duration_ms of quiet. The person
        // stopped talking that much earlier, and that is where the latency they feel starts.
        conv.markEndOfSpeech(frameTime(msg.audio_ms - st.silenceMs));
    } else if (kind === 'status' && msg.type === 'session.ending') {
        setConn('waiting', `The server is shutting down (${msg.reason}).`);
    }
    const chat = document.querySelector('.chat');
    chat.scrollTop = chat.scrollHeight;
    publish();
}

function publish() {
    const frame = st.ctx ? st.ctx.sampleRate * 0.02 : 960;
    const s = {
        ...conv.stats,
        state: $('conn').dataset.state,
        connText: $('conn-text').textContent,
        codec: st.codec,
        mode: st.mode,
        sampleRate: st.ctx ? st.ctx.sampleRate : null,
        framesSent: st.sentFrames,
        framesDropped: st.framesDropped,
        bytesSent: st.bytesSent,
        framesPlayed: Math.floor(st.totalPlayed / frame),
        answerPlayedMs: st.ctx ? Math.round(st.played / st.ctx.sampleRate * 1000) : 0,
        underruns: st.underruns,
        playing: st.playActive,
        bargeIns: st.bargeIns,
        lastError: st.lastError || null,
        latencyText: $('latency').textContent,
    };
    window.parleyStats = s;
    $('stats').textContent =
        `${s.codec || '–'} · sent ${s.framesSent} · rx ${s.framesReceived} · ` +
        `played ${s.framesPlayed} · underruns ${s.underruns} · turns ${s.turnsDetected}/` +
        `${s.turnsDone} · chars ${s.transcriptChars} · cancels ${s.cancels}`;
}

// ---- errors a person can act on -----------------------------------------------------------

function micError(e) {
    switch (e && e.name) {
        case 'NotAllowedError':
        case 'SecurityError':
            return 'Microphone permission was refused. Allow the microphone for this site ' +
                '(the icon in the address bar), then press Start again.';
        case 'NotFoundError':
        case 'OverconstrainedError':
            return 'No microphone was found. Plug one in, then press Start again.';
        case 'NotReadableError':
            return 'The microphone is busy or blocked by the system (another program may hold it).';
        default:
            return `The microphone could not be opened: ${e && e.message ? e.message : e}`;
    }
}

function insecureMessage() {
    return 'The microphone only works on a secure page. Open this page over HTTPS, or on ' +
        'this machine as http://localhost / http://127.0.0.1.';
}

// ---- audio graph --------------------------------------------------------------------------

async function startAudio() {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia)
        throw new Error(insecureMessage());
    const ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    st.ctx = ctx;
    await ctx.audioWorklet.addModule('capture-worklet.js');
    await ctx.audioWorklet.addModule('playback-worklet.js');
    let mic;
    try {
        mic = await navigator.mediaDevices.getUserMedia({
            audio: {
                echoCancellation: true,
                noiseSuppression: true,
                autoGainControl: true,
                channelCount: 1
            },
        });
    } catch (e) {
        throw new Error(micError(e));
    }
    st.mic = mic;
    const rate = ctx.sampleRate;
    st.capture = new AudioWorkletNode(ctx, 'parley-capture', {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { frame: Math.round(rate * 0.02) },
    });
    st.playback = new AudioWorkletNode(ctx, 'parley-playback', {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { prebuffer: Math.round(rate * 0.08), capacity: rate * 180 },
    });
    const src = ctx.createMediaStreamSource(mic);
    const mute = ctx.createGain();
    mute.gain.value = 0; // the capture node must be pulled by the graph, but never heard
    src.connect(st.capture).connect(mute).connect(ctx.destination);
    st.playback.connect(ctx.destination);
    st.capture.port.onmessage = (e) => onMicFrame(e.data);
    st.playback.port.onmessage = (e) => onPlayback(e.data);
    if (ctx.state !== 'running') await ctx.resume();
}

function onPlayback(m) {
    if (m.type === 'started') {
        conv.firstAudio(performance.now() + outputDelayS() * 1000);
    } else if (m.type === 'stats') {
        st.played = m.played;
        st.totalPlayed = m.totalPlayed;
        st.underruns = m.underruns;
        st.playActive = m.active;
        publish();
    } else if (m.type === 'flushed') {
        st.played = m.played;
        st.playActive = false;
        const w = st.flushWaiters.get(m.id);
        st.flushWaiters.delete(m.id);
        if (w) w(m.played);
    }
}

// Seconds from the playback worklet to the speaker (the device's buffering), where known.
function outputDelayS() {
    const c = st.ctx;
    return c ? c.outputLatency || c.baseLatency || 0 : 0;
}

// Stops playback at once; resolves with the samples of this answer played (context rate).
function flushPlayback() {
    const id = ++st.flushSeq;
    return new Promise((resolve) => {
        st.flushWaiters.set(id, resolve);
        st.playback.port.postMessage({ type: 'flush', id });
        // A suspended or closed audio context never answers: go on with the last count.
        setTimeout(() => {
            if (st.flushWaiters.delete(id)) resolve(st.played);
        }, 250);
    });
}

function frameTime(audioMs) {
    const i = Math.floor((audioMs || 0) / 20);
    if (i >= st.sentFrames || i < st.sentFrames - st.frameTimes.length) return performance.now();
    return st.frameTimes[i % st.frameTimes.length];
}

function onMicFrame(frame) {
    const db = rmsDb(frame);
    $('level-bar').style.width = `${Math.max(0, Math.min(100, (db + 70) * 1.6))}%`;
    // Hands-free, talking over the answer interrupts it; with push-to-talk the key does.
    const onset = vad.update(db, 20) === 'start';
    if (onset && st.mode === 'vad' && (st.playActive || conv.answering !== null)) bargeIn('speech');
    if (!st.ready || !st.enc) return;
    if (st.mode === 'ptt' && !st.talking) return;
    st.frameTimes[st.sentFrames % st.frameTimes.length] = performance.now();
    st.sentFrames++;
    if (st.mode === 'ptt') st.pttFrames++;
    st.enc.encode(frame);
}

// Barge-in: the person talks over the answer. Playback stops now; the server learns how much
// was heard so the conversation keeps only that.
async function bargeIn(why) {
    if (!st.playback) return;
    st.bargeIns++;
    const playing = st.playActive;
    const played = await flushPlayback();
    if (st.dec) st.dec.reset();
    // What left the worklet reaches the ear outputDelayS later: that much was not heard.
    const heard = Math.max(0, played - outputDelayS() * st.ctx.sampleRate);
    const msg = conv.cancel(heard * st.outRate / st.ctx.sampleRate, playing);
    if (msg) send(msg);
    publish();
}

// ---- connection ---------------------------------------------------------------------------

function send(obj) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(obj));
}

function sendAudio(bytes) {
    const ws = st.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount > MAX_BUFFERED) {
        st.framesDropped++;
        return;
    }
    ws.send(bytes);
    st.bytesSent += bytes.byteLength;
}

async function findWsUrl() {
    if (opt.ws) return opt.ws;
    const q = opt.key ? `?api_key=${encodeURIComponent(opt.key)}` : '';
    let r;
    try {
        r = await fetch(`/v1/server${q}`, { cache: 'no-store' });
    } catch {
        throw new Error(`Cannot reach the parley server at ${location.host}. Is parleyd running?`);
    }
    if (r.status === 401)
        throw new Error('The server wants an API key: add ?key=YOUR_KEY to the address.');
    if (!r.ok) throw new Error(`The server answered ${r.status} to /v1/server.`);
    const j = await r.json();
    const url = j.websocket?.url || j.websocket_url;
    if (!url) throw new Error('The server did not say where its voice connection is.');
    // A page on https must use wss; the server may not know it sits behind a TLS proxy.
    return location.protocol === 'https:' ? url.replace(/^ws:/, 'wss:') : url;
}

function connect() {
    clearTimeout(st.retryTimer);
    st.ready = false;
    st.everOpened = false;
    const protocols = ['parley.v1'];
    if (opt.key && /^[A-Za-z0-9._-]+$/.test(opt.key)) protocols.push(`parley.key.${opt.key}`);
    setConn('connecting', st.attempt ? `Reconnecting (attempt ${st.attempt + 1})…` : 'Connecting…');
    let ws;
    try {
        ws = new WebSocket(st.wsUrl, protocols);
    } catch (e) {
        showError(`The voice address ${st.wsUrl} is not usable: ${e.message}`);
        setConn('error', 'Not connected');
        return;
    }
    ws.binaryType = 'arraybuffer';
    st.ws = ws;
    ws.onopen = () => {
        st.everOpened = true;
        setConn('connecting', 'Starting session…');
        const rate = st.ctx.sampleRate;
        const onErr = (m) => showError(`Audio codec failure: ${m}`);
        st.enc?.close();
        st.dec?.close();
        st.enc = new Encoder(st.codec, rate, sendAudio, onErr);
        st.dec = new Decoder(st.codec, rate, (x) => {
            st.playback.port.postMessage({ type: 'push', samples: x }, [x.buffer]);
        }, onErr);
        st.outRate = st.dec.rate;
        send(sessionStart({
            inCodec: st.codec,
            inRate: st.enc.rate,
            outCodec: st.codec,
            outRate: st.dec.rate,
            mode: st.mode,
            maxTokens: opt.maxTokens,
            seed: opt.seed,
            greedy: opt.greedy
        }));
    };
    ws.onmessage = (e) => onMessage(ws, e.data);
    ws.onclose = (e) => onClose(ws, e);
}

function onMessage(ws, data) {
    if (ws !== st.ws) return;
    if (typeof data !== 'string') {
        if (conv.audioFrame() && st.dec) st.dec.decode(new Uint8Array(data));
        publish();
        return;
    }
    let msg;
    try {
        msg = JSON.parse(data);
    } catch {
        return;
    }
    // The last server messages, for people debugging and for the test's logs.
    window.parleyLog.push(msg);
    if (window.parleyLog.length > 400) window.parleyLog.shift();
    if (msg.type === 'session.started' || msg.type === 'session.updated') {
        const td = msg.turn_detection || {};
        st.silenceMs = td.type === 'server_vad' ? Number(td.silence_duration_ms) || 0 : 0;
    }
    if (msg.type === 'session.started') {
        st.ready = true;
        st.attempt = 0;
        st.sentFrames = 0;
        showError('');
        setConn(
            'ready',
            st.mode === 'ptt' ? 'Connected: hold Space or the button to talk' :
                                'Connected: just talk');
        enableInput(true);
        return;
    }
    const action = conv.handle(msg, performance.now());
    if (action === 'begin') {
        st.playActive = true; // until the worklet reports the answer played out
        st.playback.port.postMessage({ type: 'begin' });
        setConn('ready', 'Answering…');
    } else if (action === 'end') {
        const done = () => st.playback.port.postMessage({ type: 'end' });
        if (st.dec && st.codec === 'opus' && st.dec.dec.state === 'configured')
            st.dec.dec.flush().then(done, done);
        else
            done();
        setConn('ready', st.mode === 'ptt' ? 'Your turn (hold Space)' : 'Your turn');
    }
}

async function onClose(ws, e) {
    if (ws !== st.ws) return;
    st.ready = false;
    st.ws = null;
    enableInput(false);
    conv.reset();
    if (st.stopping) {
        setConn('idle', 'Stopped');
        return;
    }
    if (st.playback) await flushPlayback();
    let text;
    if (!st.everOpened)
        text = await unreachableMessage();
    else
        text = describeClose(e.code, e.reason);
    const wait = backoffMs(st.attempt, e.code);
    st.attempt++;
    showError(text);
    setConn(e.code === 1013 ? 'waiting' : 'error', `Retrying in ${Math.round(wait / 1000)} s…`);
    st.retryTimer = setTimeout(connect, wait);
}

// The WebSocket never opened: say whether the server is down or refused us.
async function unreachableMessage() {
    try {
        const r = await fetch('/healthz', { cache: 'no-store' });
        if (r.ok)
            return `The server is up but its voice connection (${st.wsUrl}) refused us: ` +
                'check the API key (?key=…) and that the WebSocket port is reachable.';
    } catch { /* the page itself may come from elsewhere: fall through */
    }
    return `Cannot reach the parley server (${st.wsUrl}). Is parleyd running?`;
}

function enableInput(on) {
    $('talk').disabled = !on || st.mode !== 'ptt';
    $('text-in').disabled = !on;
    $('text-send').disabled = !on;
}

// ---- controls -----------------------------------------------------------------------------

async function start() {
    const btn = $('start');
    if (st.ctx) return stop();
    btn.disabled = true;
    showError('');
    try {
        setConn('connecting', 'Opening the microphone…');
        st.codec = opt.codec === 'pcm16' ? 'pcm16' : await detectCodec();
        st.wsUrl = await findWsUrl();
        await startAudio();
    } catch (e) {
        showError(e.message);
        setConn('error', 'Not started');
        await teardownAudio();
        btn.disabled = false;
        return;
    }
    st.stopping = false;
    st.attempt = 0;
    btn.textContent = 'Stop';
    btn.disabled = false;
    connect();
}

async function teardownAudio() {
    st.mic?.getTracks().forEach((t) => t.stop());
    if (st.ctx) await st.ctx.close().catch(() => {});
    st.ctx = st.mic = st.capture = st.playback = null;
}

async function stop() {
    st.stopping = true;
    clearTimeout(st.retryTimer);
    if (st.ws)
        st.ws.close(1000, 'bye');
    else
        setConn('idle', 'Stopped');
    st.enc?.close();
    st.dec?.close();
    st.enc = st.dec = null;
    await teardownAudio();
    $('start').textContent = 'Start';
}

function setMode(mode) {
    st.mode = mode;
    st.talking = false;
    $('talk').hidden = mode !== 'ptt';
    $('talk').disabled = !st.ready || mode !== 'ptt';
    if (st.ready)
        send({
            type: 'session.update',
            turn_detection: mode === 'ptt' ? { type: 'manual' } : { type: 'server_vad' }
        });
    publish();
}

function talkDown() {
    if (st.mode !== 'ptt' || !st.ready || st.talking) return;
    st.talking = true;
    st.pttFrames = 0;
    $('talk').setAttribute('aria-pressed', 'true');
    if (st.playActive || conv.answering !== null) bargeIn('push-to-talk');
}

function talkUp() {
    if (!st.talking) return;
    st.talking = false;
    $('talk').setAttribute('aria-pressed', 'false');
    if (st.pttFrames < 10) {
        showError('That was too short to hear: hold the key while you talk.');
        return;
    }
    conv.markEndOfSpeech(performance.now());
    send({ type: 'input.commit' });
}

function sendText(text) {
    if (!st.ready || !text.trim()) return;
    if (st.playActive || conv.answering !== null) bargeIn('text');
    conv.markEndOfSpeech(performance.now());
    send({ type: 'input.text', text });
}

function init() {
    $('start').addEventListener('click', start);
    $('talk').hidden = st.mode !== 'ptt';
    for (const r of document.querySelectorAll('input[name=mode]')) {
        r.checked = r.value === st.mode;
        r.addEventListener('change', () => r.checked && setMode(r.value));
    }
    const talk = $('talk');
    talk.addEventListener('pointerdown', (e) => {
        talk.setPointerCapture(e.pointerId);
        talkDown();
    });
    talk.addEventListener('pointerup', talkUp);
    talk.addEventListener('pointercancel', talkUp);
    const typing = (e) => e.target instanceof HTMLInputElement && e.target.type === 'text';
    document.addEventListener('keydown', (e) => {
        if (e.code !== 'Space' || typing(e) || st.mode !== 'ptt' || !st.ready) return;
        e.preventDefault();
        if (!e.repeat) talkDown();
    });
    document.addEventListener('keyup', (e) => {
        if (e.code !== 'Space' || typing(e) || st.mode !== 'ptt') return;
        e.preventDefault();
        talkUp();
    });
    $('text-form').addEventListener('submit', (e) => {
        e.preventDefault();
        sendText($('text-in').value);
        $('text-in').value = '';
    });
    if (!window.isSecureContext) showError(insecureMessage());
    // Hooks for tests: the browser test drives the page through these and parleyStats.
    window.parleyLog = [];
    window.parleyTest = { bargeIn: () => bargeIn('test'), sendText, setMode, stop, start };
    publish();
    if (opt.autostart) start();
}

init();
