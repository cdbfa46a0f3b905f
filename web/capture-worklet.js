// capture-worklet — runs on the audio thread: gathers the microphone's 128-sample render
// blocks into 20 ms frames and posts each to the page (web/app.js), which encodes and sends.
class CaptureProcessor extends AudioWorkletProcessor {
    constructor(options) {
        super();
        this.frame = options.processorOptions.frame; // samples per 20 ms at the context rate
        this.buf = new Float32Array(this.frame);
        this.fill = 0;
    }

    process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        if (!ch) return true; // no input connected yet
        let i = 0;
        while (i < ch.length) {
            const n = Math.min(ch.length - i, this.frame - this.fill);
            this.buf.set(ch.subarray(i, i + n), this.fill);
            this.fill += n;
            i += n;
            if (this.fill === this.frame) {
                this.port.postMessage(this.buf, [this.buf.buffer]);
                this.buf = new Float32Array(this.frame);
                this.fill = 0;
            }
        }
        return true;
    }
}
registerProcessor('parley-capture', CaptureProcessor);
