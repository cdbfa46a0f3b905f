// jitter — the playback buffer between the network and the audio clock. Pure JS: the playback
// worklet (web/playback-worklet.js) owns one; the node unit tests drive it directly.
//
// Audio arrives in bursts (the model generates faster or slower than real time); the render
// callback pulls fixed blocks. Playback of an answer starts once `prebuffer` samples are queued
// (or the answer has ended); when the queue runs dry before the answer's end, that is an
// underrun: the block is padded with silence, counted, and playback waits for `prebuffer`
// again. Running dry after end() is the normal end of an answer, not an underrun.
export class JitterBuffer {
    constructor(prebuffer, capacity) {
        this.prebuffer = prebuffer; // samples queued before (re)starting
        this.capacity = capacity;   // samples; older audio is dropped beyond this (bounded memory)
        this.chunks = [];           // queued Float32Arrays
        this.head = 0;              // read offset into chunks[0]
        this.queued = 0;
        this.playing = false; // emitting audio (vs. waiting to fill)
        this.ended = true;    // no more audio expected for this answer
        this.played = 0;      // samples of the current answer sent to the output
        this.underruns = 0;
        this.dropped = 0;     // samples dropped at capacity or by flush()
        this.started = false; // first sample of the current answer has been played
    }

    // A new answer begins: counters of the answer restart, the queue keeps nothing old.
    begin() {
        this.flush();
        this.played = 0;
        this.started = false;
        this.ended = false;
    }

    push(samples) {
        if (!samples.length) return;
        this.chunks.push(samples);
        this.queued += samples.length;
        while (this.queued > this.capacity && this.chunks.length > 1) {
            const c = this.chunks.shift();
            const n = c.length - this.head;
            this.head = 0;
            this.queued -= n;
            this.dropped += n;
        }
    }

    // No more audio for this answer: play out what is queued, then stop without an underrun.
    end() {
        this.ended = true;
    }

    // Stops at once (barge-in): drops the queue; returns the samples of this answer played.
    flush() {
        this.dropped += this.queued;
        this.chunks = [];
        this.head = 0;
        this.queued = 0;
        this.playing = false;
        this.ended = true;
        return this.played;
    }

    // Fills out (silence where there is no audio); returns how many real samples it wrote.
    pull(out) {
        out.fill(0);
        if (!this.playing) {
            if (this.queued === 0) return 0;
            if (this.queued < this.prebuffer && !this.ended) return 0;
            this.playing = true;
        }
        let w = 0;
        while (w < out.length && this.chunks.length) {
            const c = this.chunks[0];
            const n = Math.min(out.length - w, c.length - this.head);
            out.set(c.subarray(this.head, this.head + n), w);
            w += n;
            this.head += n;
            if (this.head === c.length) {
                this.chunks.shift();
                this.head = 0;
            }
        }
        this.queued -= w;
        this.played += w;
        if (w > 0) this.started = true;
        if (this.queued === 0) {
            this.playing = false;
            if (!this.ended && w < out.length) this.underruns++;
        }
        return w;
    }
}
