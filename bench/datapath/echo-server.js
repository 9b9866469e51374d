// Echo server for the datapath tests and benchmark, run inside a network namespace:
//   ip netns exec NS node echo-server.js COUNT
// Opens COUNT TCP and COUNT UDP listeners on ports the OS picks (dual-stack, so both
// families reach them), prints {"tcp":[...],"udp":[...]} on one line, then echoes
// every TCP chunk and UDP datagram back until killed.
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');

const count = Number(process.argv[2] ?? '1');
const ports = { tcp: [], udp: [] };
let pending = count * 2;
const ready = () => {
  if (--pending === 0) process.stdout.write(`${JSON.stringify(ports)}\n`);
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
