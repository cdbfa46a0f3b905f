// cdp — just enough of the Chrome DevTools Protocol to drive headless Chromium from node with
// no packages: Chromium is started with --remote-debugging-pipe and spoken to over its fds 3
// (commands in) and 4 (replies and events out), one JSON message per NUL-terminated record.
import {spawn} from 'node:child_process';

export class Chromium {
    // exe: the browser binary; flags: extra command-line switches; log(line) for its stderr.
    constructor(exe, flags, log = () => {}) {
        this.proc = spawn(exe, ['--remote-debugging-pipe', ...flags, 'about:blank'], {
            stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
        });
        this.proc.stderr.on('data', (d) => String(d).split('\n').forEach((l) => l && log(l)));
        this.out = this.proc.stdio[3];
        this.seq = 0;
        this.pending = new Map();
        this.listeners = [];
        this.exited = new Promise((resolve) => this.proc.on('exit', (code, sig) => {
            for (const { reject } of this.pending.values())
                reject(new Error(`chromium exited (${code ?? sig})`));
            this.pending.clear();
            resolve(code ?? sig);
        }));
        let buf = Buffer.alloc(0);
        this.proc.stdio[4].on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            let z;
            while ((z = buf.indexOf(0)) >= 0) {
                const msg = JSON.parse(buf.subarray(0, z).toString('utf8'));
                buf = buf.subarray(z + 1);
                this.dispatch(msg);
            }
        });
    }

    dispatch(msg) {
        if (msg.id !== undefined) {
            const p = this.pending.get(msg.id);
            this.pending.delete(msg.id);
            if (!p) return;
            if (msg.error)
                p.reject(new Error(`${p.method}: ${msg.error.message}`));
            else
                p.resolve(msg.result);
            return;
        }
        for (const l of this.listeners) l(msg);
    }

    // One command; sessionId targets a page (flattened sessions).
    send(method, params = {}, sessionId) {
        const id = ++this.seq;
        const msg = { id, method, params };
        if (sessionId) msg.sessionId = sessionId;
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject, method });
            this.out.write(JSON.stringify(msg) + '\0');
        });
    }

    on(fn) {
        this.listeners.push(fn);
    }

    // A new tab attached as a session; returns a Page.
    async newPage() {
        const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
        const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
        return new Page(this, sessionId, targetId);
    }

    async close() {
        try {
            await Promise.race(
                [this.send('Browser.close'), new Promise((r) => setTimeout(r, 2000))]);
        } catch { /* already gone */
        }
        const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
        await this.exited;
        clearTimeout(t);
    }
}

export class Page {
    constructor(browser, sessionId, targetId) {
        this.b = browser;
        this.sid = sessionId;
        this.targetId = targetId;
        this.console = [];
        browser.on((m) => {
            if (m.sessionId !== this.sid) return;
            if (m.method === 'Runtime.consoleAPICalled') {
                const text = m.params.args.map((a) => a.value ?? a.description ?? a.type).join(' ');
                this.console.push(`${m.params.type}: ${text}`);
            } else if (m.method === 'Runtime.exceptionThrown') {
                const d = m.params.exceptionDetails;
                this.console.push(`exception: ${d.exception?.description ?? d.text}`);
            } else if (m.method === 'Log.entryAdded') {
                this.console.push(`${m.params.entry.level}: ${m.params.entry.text}`);
            }
        });
    }

    send(method, params) {
        return this.b.send(method, params, this.sid);
    }

    async open(url, width = 390, height = 844) {
        await this.send('Runtime.enable');
        await this.send('Log.enable');
        await this.send('Page.enable');
        await this.send(
            'Emulation.setDeviceMetricsOverride',
            { width, height, deviceScaleFactor: 2, mobile: true });
        await this.send('Page.navigate', { url });
    }

    // Value of a JS expression in the page (promises awaited); throws on a page exception.
    async eval(expression) {
        const r = await this.send(
            'Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
        if (r.exceptionDetails)
            throw new Error(
                `page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
        return r.result.value;
    }

    // Polls expression until it is truthy; returns its value, or null after timeoutMs.
    async waitFor(expression, timeoutMs, everyMs = 100) {
        const end = Date.now() + timeoutMs;
        for (;;) {
            let v = null;
            try {
                v = await this.eval(expression);
            } catch { /* page still loading */
            }
            if (v) return v;
            if (Date.now() > end) return null;
            await new Promise((r) => setTimeout(r, everyMs));
        }
    }

    async close() {
        await this.b.send('Target.closeTarget', { targetId: this.targetId });
    }

    async screenshot() {
        const { data } = await this.send('Page.captureScreenshot', { format: 'png' });
        return Buffer.from(data, 'base64');
    }
}
