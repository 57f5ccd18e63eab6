// Run in Chromium by tests/browser/test_eeg.py: the browser's EEG frame code
// (js/eeg/wire.js) against protocol/vectors/eeg/frames.json. Returns the failures.
async ({ base, vectors }) => {
    const wire = await import(`${base}/js/eeg/wire.js`);
    const msgpack = await import(`${base}/js/msgpack.js`);
    const out = [];
    for (const v of vectors) {
        const bytes = msgpack.fromHex(v.hex);
        const flat = v.values.flat();
        const f = v.kind === "eeg"
            ? wire.decodeSamples(bytes, v.channels, v.format)
            : wire.decodeView(bytes, v.header.mode === "envelope" ? v.channels / 2 : v.channels);
        for (const [k, want] of Object.entries(v.header)) {
            const got = k === "device_us" ? f.device : f[k];
            if (got !== want) out.push(`${v.name}: ${k} ${got} != ${want}`);
        }
        if (f.values.length !== flat.length || flat.some((x, i) => Math.abs(f.values[i] - x) > 1e-6 * Math.max(1, Math.abs(x)))) {
            out.push(`${v.name}: values differ`);
        }
        if (v.kind === "eeg") {
            const h = v.header;
            const again = wire.encodeSamples(
                { stream: h.stream, seq: h.seq, first: h.first, count: h.count, device: h.device_us },
                flat, v.format);
            if (msgpack.toHex(again) !== v.hex) out.push(`${v.name}: encoding differs`);
        }
    }
    return out;
};
