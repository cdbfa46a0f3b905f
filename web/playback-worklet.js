// playback-worklet — runs on the audio thread: plays the answer's audio from a jitter buffer
// (web/lib/jitter.js) and tells the page when an answer's first sample is played, how much of
// it has been played (for response.cancel) and how often the buffer ran dry (underruns).
import {JitterBuffer} from './lib/jitter.js';

class PlaybackProcessor extends AudioWorkletProcessor {
    constructor(options) {
        super();
        const o = options.processorOptions;
        this.jb = new JitterBuffer(o.prebuffer, o.capacity);
        this.totalPlayed = 0;
        this.blocks = 0;
        this.wasActive = false;
        this.port.onmessage = (e) => this.command(e.data);
    }

    command(m) {
        if (m.type === 'push') {
            this.jb.push(m.samples);
        } else if (m.type === 'begin') {
            this.jb.begin();
            this.report(); // active from the commit on: a barge-in may come before any audio
        } else if (m.type === 'end') {
            this.jb.end();
            this.report();
        } else if (m.type === 'flush') {
            const played = this.jb.flush();
            this.port.postMessage({ type: 'flushed', id: m.id, played });
            this.report();
        }
    }

    report() {
        const jb = this.jb;
        this.port.postMessage({
            type: 'stats',
            played: jb.played,
            totalPlayed: this.totalPlayed,
            underruns: jb.underruns,
            queued: jb.queued,
            active: jb.playing || jb.queued > 0 || !jb.ended
        });
    }

    process(inputs, outputs) {
        const out = outputs[0][0];
        const before = this.jb.started;
        const n = this.jb.pull(out);
        for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
        this.totalPlayed += n;
        if (!before && this.jb.started) this.port.postMessage({ type: 'started' });
        // Stats about every 50 ms while audio flows, and once when it stops.
        const active = n > 0;
        if ((active && ++this.blocks % 18 === 0) || active !== this.wasActive) this.report();
        this.wasActive = active;
        return true;
    }
}
registerProcessor('parley-playback', PlaybackProcessor);
