// A webhook receiver for test/metrics.test.ts, run inside a lab namespace:
//   webhook-sink.mjs HOST PORT STATUS MAXMS [CERT KEY]   (https with CERT and KEY)
// Prints "listening" once bound, then one JSON line per request {method, path, type, body};
// answers STATUS; exits after MAXMS (a test that forgets it never leaves it running).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
const [host, port, status, maxMs, cert, key] = process.argv.slice(2);
const handler = (req, res) => {
  let body = '';
  req.on('data', (d) => { if (body.length < 65536) body += d; });
  req.on('end', () => {
    process.stdout.write(JSON.stringify({ method: req.method, path: req.url, type: req.headers['content-type'], body }) + '\n');
    res.writeHead(Number(status)).end();
  });
};
const server = cert ? https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, handler) : http.createServer(handler);
server.on('tlsClientError', (e) => process.stdout.write(JSON.stringify({ tls_error: e.code ?? e.message }) + '\n'));
server.listen(Number(port), host, () => process.stdout.write('listening\n'));
setTimeout(() => process.exit(0), Number(maxMs)).unref();
