// Unit tests of the browser client's pure logic (web/lib/*.js) in node: sample conversion,
// the resampler, the jitter buffer, the barge-in VAD and the protocol handling.
// Run: node tests/browser/unit.mjs   (last line: "N passed, N failed")
import {backoffMs, Conversation, describeClose, sessionStart} from '../../web/lib/conversation.js';
import {JitterBuffer} from '../../web/lib/jitter.js';
import {floatToPcm16, pcm16ToFloat, Resampler, rmsDb} from '../../web/lib/pcm.js';
import {EnergyVad} from '../../web/lib/vad.js';

let passed = 0, failed = 0, current = '';
function check(cond, what) {
    if (!cond) {
        failed++;
        console.log(`FAIL ${current}: ${what}`);
        throw new Error('check');
    }
}
function test(name, fn) {
    current = name;
    try {
        fn();
        passed++;
    } catch (e) {
        if (e.message !== 'check') {
            failed++;
            console.log(`FAIL ${name}: ${e.stack}`);
        }
    }
}
const sine = (n, f, rate, amp = 0.5) =>
    Float32Array.from({ length: n }, (_, i) => amp * Math.sin(2 * Math.PI * f * i / rate));

test('pcm16_round_trip', () => {
    const f = Float32Array.from([0, 0.5, -0.5, 1, -1, 2, -2, NaN, 1 / 32768]);
    const i = floatToPcm16(f);
    check(i[0] === 0 && i[1] === 16384 && i[2] === -16384, `values ${i}`);
    check(i[3] === 32767 && i[4] === -32768 && i[5] === 32767 && i[6] === -32768, 'clipping');
    check(i[7] === -32768, 'NaN maps to the floor, not garbage');
    const back = pcm16ToFloat(new Uint8Array(i.buffer));
    check(back.length === f.length && back[1] === 0.5 && back[4] === -1, `back ${back}`);
    // little-endian regardless of host, odd trailing byte ignored
    const b = pcm16ToFloat(Uint8Array.from([0x00, 0x40, 0xff, 0x7f, 0x12]).buffer);
    check(b.length === 2 && b[0] === 0.5 && Math.abs(b[1] - 32767 / 32768) < 1e-9, `${b}`);
});

test('rms_db', () => {
    check(rmsDb(new Float32Array(960)) === -120, 'silence');
    const db = rmsDb(sine(4800, 1000, 48000, 1));
    check(Math.abs(db - -3.01) < 0.05, `full-scale sine ${db}`);
});

function resampleCheck(from, to, f, pieces) {
    const n = from; // one second
    const x = sine(n, f, from);
    const rs = new Resampler(from, to);
    const outs = [];
    let off = 0;
    for (const p of pieces) {
        outs.push(rs.process(x.subarray(off, off + p)));
        off += p;
    }
    outs.push(rs.process(x.subarray(off)));
    const y = new Float32Array(outs.reduce((a, o) => a + o.length, 0));
    let o = 0;
    for (const p of outs) {
        y.set(p, o);
        o += p.length;
    }
    return { y, ref: sine(y.length, f, to) };
}

test('resample_48k_to_16k_sine', () => {
    const { y, ref } = resampleCheck(48000, 16000, 440, [960, 961, 7, 5000]);
    check(Math.abs(y.length - 16000) < 40, `length ${y.length}`);
    let worst = 0;
    for (let i = 200; i < y.length - 200; i++) worst = Math.max(worst, Math.abs(y[i] - ref[i]));
    check(worst < 0.01, `max error ${worst}`);
});

test('resample_pieces_equal_whole', () => {
    const x = sine(9600, 1234, 48000);
    const a = new Resampler(48000, 22050).process(x);
    const r = new Resampler(48000, 22050);
    const parts = [
        r.process(x.subarray(0, 100)), r.process(x.subarray(100, 5000)), r.process(x.subarray(5000))
    ];
    const b = Float32Array.from(parts.flatMap((p) => Array.from(p)));
    check(a.length === b.length, `${a.length} vs ${b.length}`);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    check(worst < 1e-6, `pieces differ by ${worst}`);
});

test('resample_antialias', () => {
    // 12 kHz at 48 kHz cannot exist at 16 kHz: it must be suppressed, not folded to 4 kHz.
    const { y } = resampleCheck(48000, 16000, 12000, [48000]);
    const db = rmsDb(y.subarray(200, y.length - 200));
    check(db < -40, `aliased tone at ${db} dBFS`);
});

test('resample_up_22050_to_48k', () => {
    const { y, ref } = resampleCheck(22050, 48000, 300, [441, 441, 1000]);
    check(Math.abs(y.length - 48000) < 60, `length ${y.length}`);
    let worst = 0;
    for (let i = 500; i < y.length - 500; i++) worst = Math.max(worst, Math.abs(y[i] - ref[i]));
    check(worst < 0.01, `max error ${worst}`);
});

test('jitter_prebuffer_and_order', () => {
    const jb = new JitterBuffer(256, 48000);
    jb.begin();
    const out = new Float32Array(128);
    jb.push(Float32Array.from({ length: 200 }, (_, i) => i + 1));
    check(jb.pull(out) === 0 && out.every((v) => v === 0), 'waits for the prebuffer');
    jb.push(Float32Array.from({ length: 100 }, (_, i) => 201 + i));
    check(jb.pull(out) === 128 && out[0] === 1 && out[127] === 128, 'plays in order');
    check(jb.pull(out) === 128 && out[0] === 129, 'continues across chunks');
    check(jb.started && jb.played === 256 && jb.underruns === 0, 'counters');
});

test('jitter_underrun_counted_once_and_rebuffers', () => {
    const jb = new JitterBuffer(128, 48000);
    jb.begin();
    const out = new Float32Array(128);
    jb.push(new Float32Array(192).fill(0.1));
    check(jb.pull(out) === 128, 'first block');
    check(
        jb.pull(out) === 64 && out[63] === Math.fround(0.1) && out[64] === 0,
        'partial block, rest silent');
    check(jb.underruns === 1, `underruns ${jb.underruns}`);
    check(jb.pull(out) === 0 && jb.underruns === 1, 'waiting is not another underrun');
    jb.push(new Float32Array(64).fill(0.2));
    check(jb.pull(out) === 0, 'rebuffers to the prebuffer level');
    jb.push(new Float32Array(64).fill(0.2));
    check(jb.pull(out) === 128, 'resumes');
});

test('jitter_end_drains_without_underrun', () => {
    const jb = new JitterBuffer(1000, 48000);
    jb.begin();
    const out = new Float32Array(128);
    jb.push(new Float32Array(100).fill(0.3));
    jb.end();
    check(jb.pull(out) === 100, 'a short answer plays below the prebuffer once ended');
    check(jb.pull(out) === 0 && jb.underruns === 0, 'the end is not an underrun');
});

test('jitter_flush_and_capacity', () => {
    const jb = new JitterBuffer(10, 300);
    jb.begin();
    const out = new Float32Array(50);
    jb.push(new Float32Array(100).fill(1));
    jb.pull(out);
    check(jb.flush() === 50 && jb.queued === 0, 'flush returns the samples played');
    check(jb.pull(out) === 0, 'silent after flush');
    jb.begin();
    for (let i = 0; i < 5; i++) jb.push(new Float32Array(100).fill(i));
    check(jb.queued <= 300 && jb.dropped >= 200, `bounded: queued ${jb.queued}`);
    jb.pull(out);
    check(out[0] === 2, 'the oldest audio went first');
});

test('vad_onset_and_hang', () => {
    const v = new EnergyVad({ thresholdDb: -40, onsetMs: 100, hangMs: 300 });
    const ev = [];
    const feed = (db, n) => {
        for (let i = 0; i < n; i++) {
            const e = v.update(db, 20);
            if (e) ev.push(e);
        }
    };
    feed(-30, 4); // 80 ms: too short
    feed(-60, 1);
    check(ev.length === 0, 'a click is not speech');
    feed(-30, 5);
    check(ev.join() === 'start', `events ${ev}`);
    feed(-60, 10); // 200 ms: a pause inside speech
    check(ev.join() === 'start', 'no stop within the hang time');
    feed(-60, 10);
    feed(-30, 3);
    check(ev.join() === 'start,stop', `events ${ev}`);
});

test('conversation_turn_flow', () => {
    const seen = [];
    const c = new Conversation((k, t) => seen.push(k));
    c.markEndOfSpeech(1000);
    check(c.handle({ type: 'speech.started', audio_ms: 100 }, 900) === null, 'speech.started');
    check(
        c.handle({ type: 'input.committed', turn: 0, audio_ms: 2980 }, 1600) === 'begin', 'begin');
    c.handle({ type: 'user.tokenized', turn: 0, tokens: 37, seconds: 2.98 }, 1700);
    check(c.turn(0).user === '(spoken, 37 tokens, 2.98 s)', c.turn(0).user);
    c.handle({ type: 'transcript.delta', turn: 0, text: 'Hel', audio_samples: 0 }, 1800);
    check(c.audioFrame() && c.audioFrame(), 'frames of a live answer play');
    c.handle({ type: 'transcript.delta', turn: 0, text: 'lo', audio_samples: 1920 }, 1900);
    check(
        c.handle(
            {
                type: 'turn.done',
                turn: 0,
                reason: 'end',
                text: 'Hello',
                timings: { first_audio_ms: 300 }
            },
            3000) === 'end',
        'end');
    // a fast model finishes before the speaker starts: the latency still goes to this turn
    c.firstAudio(1450 + 1000);
    check(c.stats.lastLatencyMs === 1450, `latency ${c.stats.lastLatencyMs}`);
    c.firstAudio(5000);
    check(c.stats.lastLatencyMs === 1450, 'only the first sample counts');
    const s = c.stats;
    check(
        s.turnsDetected === 1 && s.turnsDone === 1 && s.transcriptChars === 5 &&
            s.framesReceived === 2 && s.lastServerFirstAudioMs === 300,
        JSON.stringify(s));
    check(c.turn(0).answer === 'Hello' && c.answering === null, 'answer text');
    check(seen.includes('user') && seen.includes('answer'), 'rendered');
});

test('conversation_cancel_discards_until_done', () => {
    const c = new Conversation();
    check(c.cancel(100) === null, 'nothing to cancel');
    c.handle({ type: 'input.committed', turn: 3, audio_ms: 1000 }, 0);
    const m = c.cancel(52800.4);
    check(
        m.type === 'response.cancel' && m.played_samples === 52800 && m.event_id === 'cancel-1',
        JSON.stringify(m));
    check(!c.audioFrame() && c.stats.framesDiscarded === 1, 'in-flight audio is dropped');
    c.handle({ type: 'transcript.delta', turn: 3, text: 'late', audio_samples: 0 }, 1);
    check(c.stats.transcriptChars === 0, 'late text is not shown');
    // the server may answer the racing cancel with an error: not shown to the person
    c.handle({ type: 'error', code: 'invalid_value', message: 'x', event_id: 'cancel-1' }, 1);
    check(c.stats.errors === 0, 'cancel race error is quiet');
    c.handle({ type: 'turn.done', turn: 3, reason: 'cancelled' }, 2);
    check(c.audioFrame(), 'the next answer plays again');
    check(c.turn(3).reason === 'cancelled' && c.stats.cancels === 1, 'recorded');
    c.handle({ type: 'error', code: 'busy', message: 'y' }, 3);
    // an answer wholly generated but still playing: cancel reports what was heard, and
    // nothing is discarded (no more audio of it will come)
    c.handle({ type: 'input.committed', turn: 4, audio_ms: 900 }, 4);
    c.handle({ type: 'turn.done', turn: 4, reason: 'end', text: 'long answer' }, 5);
    check(c.cancel(10, false) === null, 'nothing playing, nothing to cancel');
    const m2 = c.cancel(4800, true);
    check(
        m2 && m2.played_samples === 4800 && c.discarding === null && c.audioFrame(), 'after done');
    check(c.turn(4).reason === 'cancelled', 'shown as interrupted');
    check(c.stats.errors === 1 && c.lastError.code === 'busy', 'other errors count');
});

test('conversation_text_turn', () => {
    const c = new Conversation();
    c.handle({ type: 'input.committed', turn: 1, text: 'hi there' }, 5);
    check(c.turn(1).user === 'hi there' && c.stats.turnsDetected === 0, 'typed turn');
    c.handle({ type: 'turn.done', turn: 1, reason: 'length', text: 'abc' }, 6);
    check(c.turn(1).answer === 'abc' && c.stats.transcriptChars === 3, 'text from turn.done');
});

test('session_start_message', () => {
    const m = sessionStart({
        inCodec: 'pcm16',
        inRate: 16000,
        outCodec: 'pcm16',
        outRate: 48000,
        mode: 'ptt',
        maxTokens: 40,
        seed: 0
    });
    check(m.type === 'session.start' && m.input.codec === 'pcm16' && m.input.rate === 16000, 'in');
    check(m.output.rate === 48000 && m.turn_detection.type === 'manual', 'out, manual');
    check(
        m.sampling.max_new_tokens === 40 && m.sampling.seed === 0 && !('greedy' in m.sampling),
        'sampling');
    const v = sessionStart(
        { inCodec: 'opus', inRate: 48000, outCodec: 'opus', outRate: 48000, mode: 'vad' });
    check(v.turn_detection.type === 'server_vad' && !v.sampling, 'defaults');
});

test('backoff_and_close_text', () => {
    check(backoffMs(0, 1006, () => 0.5) === 1000, 'first retry 1 s');
    check(backoffMs(3, 1006, () => 0.5) === 8000, 'doubles');
    check(
        Math.abs(backoffMs(20, 1006, () => 1) - 36000) < 1 &&
            Math.abs(backoffMs(20, 1006, () => 0) - 24000) < 1,
        'capped');
    check(backoffMs(0, 1013, () => 0.5) === 5000, 'full server waits longer');
    check(describeClose(1013, 'server full: 32 sessions').includes('full'), 'server full text');
    check(describeClose(4999, '').includes('4999'), 'unknown code named');
});

console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
