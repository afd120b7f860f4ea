// A webhook receiver for test/metrics.test.ts, run inside a lab namespace:
//   webhook-sink.mjs HOST PORT STATUS MAXMS
// Prints "listening" once bound, then one JSON line per request {method, path, type, body};
// answers STATUS; exits after MAXMS (a test that forgets it never leaves it running).
import http from 'node:http';
const [host, port, status, maxMs] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { if (body.length < 65536) body += d; });
  req.on('end', () => {
    process.stdout.write(JSON.stringify({ method: req.method, path: req.url, type: req.headers['content-type'], body }) + '\n');
    res.writeHead(Number(status)).end();
  });
});
server.listen(Number(port), host, () => process.stdout.write('listening\n'));
setTimeout(() => process.exit(0), Number(maxMs)).unref();
