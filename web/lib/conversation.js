// conversation — the client's side of the parley.v1 protocol (docs/protocol.md), without
// sockets, audio or DOM: it turns server messages into turns to show and counters, decides
// which audio frames to play, and builds the client messages. The page (web/app.js) wires it
// to a WebSocket and the audio graph; tests/browser/unit.mjs drives it with scripted messages.

export const CLOSE_REASONS = {
    1000: 'The server ended the session',
    1001: 'The server is going away',
    1006: 'The connection was lost',
    1008: 'The server closed the session: this device did not keep up with the audio',
    1009: 'The server closed the session: a message was too big',
    1011: 'The server hit an internal error',
    1013: 'The server is full right now',
};

// A sentence for a close code and reason a person can act on.
export function describeClose(code, reason) {
    const base = CLOSE_REASONS[code] || `The connection closed (code ${code})`;
    if (code === 1013) return `${base}${reason ? ` (${reason})` : ''}; trying again shortly.`;
    return reason ? `${base}: ${reason}.` : `${base}.`;
}

// Delay before reconnect attempt n (0-based): 1 s doubling to 30 s, with +-20 % jitter so many
// clients dropped at once do not come back in step. A full server (1013) waits at least 5 s.
export function backoffMs(n, code, rand = Math.random) {
    const base = Math.min(30000, 1000 * 2 ** Math.min(n, 5));
    const ms = base * (0.8 + 0.4 * rand());
    return code === 1013 ? Math.max(5000, ms) : ms;
}

export function sessionStart(opts) {
    const msg = {
        type: 'session.start',
        input: { codec: opts.inCodec, rate: opts.inRate },
        output: { codec: opts.outCodec, rate: opts.outRate },
        system_prompt: 'auto',
        turn_detection: opts.mode === 'ptt' ? { type: 'manual' } : { type: 'server_vad' },
    };
    const sampling = {};
    if (opts.maxTokens) sampling.max_new_tokens = opts.maxTokens;
    if (opts.seed !== undefined && opts.seed !== null) sampling.seed = opts.seed;
    if (opts.greedy) sampling.greedy = true;
    if (Object.keys(sampling).length) msg.sampling = sampling;
    return msg;
}

export class Conversation {
    constructor(onChange = () => {}) {
        this.onChange = onChange; // (kind, turn) : kind 'user' | 'answer' | 'status'
        this.turns = new Map();   // turn id -> {id, user, answer, reason, latencyMs, ...}
        this.answering = null;    // turn id whose answer is streaming, or null
        this.lastTurn = null;     // the last committed turn
        this.discarding = null;   // turn id whose remaining audio is dropped after a cancel
        this.pendingEnd = null;   // wall time of the end of the speech not yet committed
        this.cancelSeq = 0;
        this.stats = {
            framesReceived: 0,
            framesDiscarded: 0,
            turnsDetected: 0,
            turnsDone: 0,
            transcriptChars: 0,
            cancels: 0,
            speechStarted: 0,
            lastLatencyMs: null,
            lastServerFirstAudioMs: null,
            lastReason: null,
            errors: 0,
        };
        this.lastError = null;
    }

    turn(id) {
        let t = this.turns.get(id);
        if (!t) {
            t = {
                id,
                user: '',
                userKind: 'spoken',
                answer: '',
                reason: null,
                endOfSpeech: null,
                latencyMs: null,
                firstAudioAt: null,
                serverTimings: null
            };
            this.turns.set(id, t);
        }
        return t;
    }

    // The wall time (ms) the user stopped talking; the next committed turn takes it.
    markEndOfSpeech(t) {
        this.pendingEnd = t;
    }

    // A server text message (already parsed). `now` is the wall time in ms. Returns what the
    // page has to do with the audio path: 'begin' (a new answer starts), 'end' (no more audio
    // of this answer), or null.
    handle(msg, now) {
        switch (msg.type) {
            case 'speech.started':
                this.stats.speechStarted++;
                this.onChange('status', null, msg);
                return null;
            case 'speech.stopped':
                this.onChange('status', null, msg);
                return null;
            case 'input.committed': {
                const t = this.turn(msg.turn);
                if (typeof msg.text === 'string') {
                    t.userKind = 'text';
                    t.user = msg.text;
                } else {
                    this.stats.turnsDetected++;
                    t.user = `(spoken, ${((msg.audio_ms || 0) / 1000).toFixed(1)} s)`;
                }
                t.endOfSpeech = this.pendingEnd ?? now;
                this.pendingEnd = null;
                this.answering = msg.turn;
                this.lastTurn = msg.turn;
                this.onChange('user', t);
                return 'begin';
            }
            case 'user.tokenized': {
                const t = this.turn(msg.turn);
                t.user = `(spoken, ${msg.tokens} tokens, ${Number(msg.seconds).toFixed(2)} s)`;
                this.onChange('user', t);
                return null;
            }
            case 'transcript.delta': {
                const t = this.turn(msg.turn);
                if (this.discarding === msg.turn) return null;
                t.answer += msg.text;
                this.stats.transcriptChars += msg.text.length;
                this.onChange('answer', t);
                return null;
            }
            case 'turn.done': {
                const t = this.turn(msg.turn);
                if (t.reason !== 'cancelled') t.reason = msg.reason; // a local stop stays one
                t.serverTimings = msg.timings || null;
                if (!t.answer && msg.text && this.discarding !== msg.turn) {
                    t.answer = msg.text;
                    this.stats.transcriptChars += msg.text.length;
                }
                this.stats.turnsDone++;
                this.stats.lastReason = msg.reason;
                if (msg.timings && msg.timings.first_audio_ms !== undefined)
                    this.stats.lastServerFirstAudioMs = msg.timings.first_audio_ms;
                if (this.discarding === msg.turn) this.discarding = null;
                if (this.answering === msg.turn) this.answering = null;
                this.onChange('answer', t);
                return 'end';
            }
            case 'turn.truncated': {
                // Our cancel reached the server after the answer was generated: the
                // conversation now holds only what was heard.
                const t = this.turn(msg.turn);
                t.reason = 'cancelled';
                this.stats.truncated = (this.stats.truncated || 0) + 1;
                this.onChange('answer', t);
                return null;
            }
            case 'error':
                // A cancel racing the end of its answer is harmless: the answer is over either way.
                if (msg.event_id && String(msg.event_id).startsWith('cancel-')) return null;
                this.stats.errors++;
                this.lastError = msg;
                this.onChange('error', null, msg);
                return null;
            default:
                this.onChange('status', null, msg);
                return null;
        }
    }

    // A binary message arrived: true when it belongs to an answer that should be played.
    audioFrame() {
        this.stats.framesReceived++;
        if (this.discarding !== null) {
            this.stats.framesDiscarded++;
            return false;
        }
        return true;
    }

    // The first sample of the answer reached the speaker at wall time `now`.
    // That answer is the last committed turn's: a fast model may have sent turn.done already.
    firstAudio(now) {
        if (this.lastTurn === null) return;
        const t = this.turn(this.lastTurn);
        if (t.firstAudioAt !== null) return;
        t.firstAudioAt = now;
        if (t.endOfSpeech !== null) {
            t.latencyMs = Math.max(0, Math.round(now - t.endOfSpeech));
            this.stats.lastLatencyMs = t.latencyMs;
        }
        this.onChange('answer', t);
    }

    // Barge-in: the message to send, or null when there is nothing to cancel. `played` counts
    // this answer's samples heard, at the session's output rate. `playing`: the speaker was
    // still playing the last answer — which may be wholly generated already (turn.done came,
    // the model is faster than real time); the cancel then still tells the server how much
    // was heard, so the history keeps only that.
    cancel(played, playing = false) {
        const id = this.answering ?? (playing ? this.lastTurn : null);
        if (id === null) return null;
        // Audio still in flight belongs to a live answer only; after turn.done none will come.
        if (this.answering !== null) this.discarding = this.answering;
        this.stats.cancels++;
        const t = this.turn(id);
        t.reason = 'cancelled';
        this.onChange('answer', t);
        return {
            type: 'response.cancel',
            played_samples: Math.max(0, Math.round(played)),
            event_id: `cancel-${++this.cancelSeq}`
        };
    }

    // After a reconnect nothing of the old session is in flight.
    reset() {
        this.answering = null;
        this.lastTurn = null;
        this.discarding = null;
        this.pendingEnd = null;
    }
}
