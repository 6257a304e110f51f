// Interop with cose-js (an independent COSE implementation from npm): for each case, verify the
// token made by coapca and make one of its own over the same payload with the same key.
// Input (stdin): {"cases": [{alg, kid, key | d,x,y, payload, token}]} (hex); output (stdout):
// [{made, read}] (hex). Run by ace/interop_test.go with NODE_PATH set to cose-js's node_modules.
'use strict';
const cose = require('cose-js');

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const hex = (s) => Buffer.from(s, 'hex');

(async () => {
  const out = [];
  for (const c of input.cases) {
    const payload = hex(c.payload);
    const headers = { p: {}, u: { kid: c.kid } };
    let made, read;
    switch (c.alg) {
      case 10:
        headers.p.alg = 'AES-CCM-16-64-128';
        made = await cose.encrypt.create(headers, payload, { key: hex(c.key) });
        read = await cose.encrypt.read(hex(c.token), hex(c.key));
        break;
      case 4:
      case 5:
        headers.p.alg = c.alg === 4 ? 'SHA-256_64' : 'SHA-256';
        made = await cose.mac.create(headers, payload, { key: hex(c.key) });
        read = await cose.mac.read(hex(c.token), hex(c.key));
        break;
      case -7:
        headers.p.alg = 'ES256';
        made = await cose.sign.create(headers, payload, { key: { d: hex(c.d) } });
        read = await cose.sign.verify(hex(c.token), { key: { x: hex(c.x), y: hex(c.y) } });
        break;
      default:
        throw new Error('unknown alg ' + c.alg);
    }
    out.push({ made: Buffer.from(made).toString('hex'), read: Buffer.from(read).toString('hex') });
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
