// Run in Chromium by tests/browser/test_client.py: the browser client against
// protocol/vectors/. Returns one line per failed check (an empty list: all good).
async ({ base, files }) => {
  const codec = await import(`${base}/js/codec.js`);
  const msgpack = await import(`${base}/js/msgpack.js`);
  const { Hub } = await import(`${base}/js/medhub.js`);
  const failures = [];
  const counts = { decoded: 0, encoded: 0, refused: 0 };

  const same = (a, b) => {
    if (a === b) return true;
    if (a instanceof Uint8Array || b instanceof Uint8Array) return false;
    if (Array.isArray(a) || Array.isArray(b)) {
      return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
    }
    if (a && b && typeof a === "object" && typeof b === "object") {
      const ka = Object.keys(a).sort();
      const kb = Object.keys(b).sort();
      return same(ka, kb) && ka.every((k) => same(a[k], b[k]));
    }
    return false;
  };
  const fail = (c, what, detail = "") => failures.push(`${c.file}:${c.name}: ${what} ${detail}`.trim());
  const attempt = (c, what, fn) => {
    try {
      return fn();
    } catch (err) {
      fail(c, what, `threw ${err.code || ""} ${err.message}`);
      return undefined;
    }
  };
  const frames = (c) => [
    ...(c.json === null ? [] : [["json", c.json, codec.jsonCodec]]),
    ...(c.msgpack_hex === null ? [] : [["msgpack", msgpack.fromHex(c.msgpack_hex), codec.msgpackCodec]]),
  ];

  for (const [file, cases] of Object.entries(files)) {
    for (const raw of cases) {
      const c = { ...raw, file };
      for (const [name, frame, cdc] of frames(c)) {
        if (c.expect === "ok") {
          // decode: the frame means `meaning`
          const decoded = attempt(c, `${name} decode`, () =>
            c.direction === "client" ? codec.checkClientFrame(frame, cdc) : cdc.decode(frame));
          if (decoded !== undefined) {
            counts.decoded += 1;
            if (!same(decoded, c.meaning)) fail(c, `${name} decode differs`, JSON.stringify(decoded));
          }
          // encode: `meaning` gives the same data back; client frames byte for byte
          const encoded = attempt(c, `${name} encode`, () => cdc.encode(c.meaning));
          if (encoded === undefined) continue;
          counts.encoded += 1;
          if (!same(cdc.decode(encoded), c.meaning)) fail(c, `${name} round trip differs`);
          if (c.direction === "client") {
            const bytes = name === "json" ? encoded : msgpack.toHex(encoded);
            const want = name === "json" ? c.json : c.msgpack_hex;
            if (bytes !== want) fail(c, `${name} encoding differs`, `${bytes} != ${want}`);
          }
        } else {
          // a frame the hub refuses: the client's own check refuses it the same way
          try {
            codec.checkClientFrame(frame, cdc);
            fail(c, `${name} accepted`, `(the hub answers ${c.expect.error})`);
          } catch (err) {
            if (!(err instanceof codec.FrameError)) {
              fail(c, `${name} threw`, String(err));
            } else if (err.code !== c.expect.error || err.id !== c.expect.id) {
              fail(c, `${name} refused as ${err.code} id=${err.id}`, `(the hub: ${c.expect.error} id=${c.expect.id})`);
            } else {
              counts.refused += 1;
            }
          }
        }
      }
    }
  }

  // The client's own hello is the hello_cookie vector, byte for byte.
  const hub = new Hub({ socketFactory: () => { throw new Error("no socket in this check"); } });
  const hello = codec.jsonCodec.encode(hub._helloFrame());
  const vector = files["core.json"].find((c) => c.name === "hello_cookie");
  if (hello !== vector.json) failures.push(`the client's hello ${hello} != ${vector.json}`);

  return { failures, counts };
};
