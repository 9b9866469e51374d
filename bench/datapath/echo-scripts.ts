/**
 * The echo server and client the datapath tests and benchmark run inside network
 * namespaces, as plain JavaScript source for `node -e` (a constant, never built from
 * input; arguments go in argv after `--`). Kept as strings so they start in tens of
 * milliseconds without a TypeScript loader.
 */

/**
 * `node -e ECHO_SERVER -- COUNT`: opens COUNT TCP and COUNT UDP listeners on ports the
 * OS picks (dual-stack), prints `{"tcp":[...],"udp":[...]}` on one line, then echoes
 * every TCP chunk and UDP datagram back until killed.
 */
export const ECHO_SERVER = `
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');

const count = Number(process.argv[1] ?? '1');
const ports = { tcp: [], udp: [] };
let pending = count * 2;
const ready = () => {
  if (--pending === 0) process.stdout.write(\`\${JSON.stringify(ports)}\\n\`);
};
for (let i = 0; i < count; i++) {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('data', (d) => socket.write(d));
    socket.on('error', () => undefined);
  });
  server.listen({ port: 0, host: '::', ipv6Only: false }, () => {
    ports.tcp.push(server.address().port);
    ready();
  });
  const udp = dgram.createSocket({ type: 'udp6', ipv6Only: false });
  udp.on('message', (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
  udp.bind({ port: 0, address: '::' }, () => {
    ports.udp.push(udp.address().port);
    ready();
  });
}
`;

/**
 * `node -e ECHO_CLIENT -- tcp|udp HOST PORT TIMEOUT_MS [ROUNDS]`: ROUNDS (default 1)
 * request/response exchanges one after the other. Exit 0 printing
 * `{"rounds":N,"ns":elapsed}` when all came back, exit 1 with the reason on stderr when
 * one did not arrive within TIMEOUT_MS.
 */
export const ECHO_CLIENT = `
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');

const [proto, host, portText, timeoutText, roundsText] = process.argv.slice(1);
const port = Number(portText);
const timeoutMs = Number(timeoutText ?? '1000');
const rounds = Number(roundsText ?? '1');
const payload = Buffer.from('fos1-ping');
const fail = (why) => {
  process.stderr.write(\`\${why}\\n\`);
  process.exit(1);
};
const timer = setTimeout(() => fail(\`timeout after \${timeoutMs} ms\`), timeoutMs);
let done = 0;
let started;
const finish = () => {
  clearTimeout(timer);
  process.stdout.write(\`\${JSON.stringify({ rounds, ns: Number(process.hrtime.bigint() - started) })}\\n\`);
  process.exit(0);
};

if (proto === 'tcp') {
  const socket = net.connect({ host, port, noDelay: true }, () => {
    started = process.hrtime.bigint();
    socket.write(payload);
  });
  let got = 0;
  socket.on('data', (d) => {
    got += d.length;
    while (got >= payload.length) {
      got -= payload.length;
      if (++done === rounds) return finish();
      socket.write(payload);
    }
  });
  socket.on('error', (e) => fail(e.message));
} else if (proto === 'udp') {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  socket.on('message', () => {
    if (++done === rounds) return finish();
    socket.send(payload, port, host);
  });
  socket.on('error', (e) => fail(e.message));
  started = process.hrtime.bigint();
  socket.send(payload, port, host);
} else {
  fail(\`unknown protocol \${proto}\`);
}
`;
