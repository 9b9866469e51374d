// Client for echo-server.js, run inside a network namespace:
//   ip netns exec NS node echo-client.js tcp|udp HOST PORT TIMEOUT_MS [ROUNDS]
// Sends ROUNDS (default 1) small requests one after the other, each waiting for its
// echo. Exit 0 and prints {"rounds":N,"ns":elapsed} when all came back; exit 1 with
// the reason on stderr when one did not arrive within TIMEOUT_MS.
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');

const [proto, host, portText, timeoutText, roundsText] = process.argv.slice(2);
const port = Number(portText);
const timeoutMs = Number(timeoutText ?? '1000');
const rounds = Number(roundsText ?? '1');
const payload = Buffer.from('fos1-ping');
const fail = (why) => {
  process.stderr.write(`${why}\n`);
  process.exit(1);
};
const timer = setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs);
let done = 0;
let started;
const finish = () => {
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify({ rounds, ns: Number(process.hrtime.bigint() - started) })}\n`);
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
  fail(`unknown protocol ${proto}`);
}
