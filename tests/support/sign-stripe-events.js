// Signs webhook payloads with Stripe's own Node library, as Stripe would:
// `stripe.webhooks.generateTestHeaderString`. The end-to-end tests check our
// verifier against this independent signer.
//
// Input (stdin): a JSON array of {"payload": "<exact body>", "secret":
// "whsec_...", "timestamp": <unix seconds>}.
// Output (stdout): a JSON array of the Stripe-Signature headers, in order.
// The folder holding node_modules/stripe is the first argument.
'use strict';

const path = require('path');
const Stripe = require(path.resolve(process.argv[2], 'node_modules', 'stripe'));
const stripe = new Stripe('sk_test_signer_only');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const requests = JSON.parse(input);
  const headers = requests.map((r) => stripe.webhooks.generateTestHeaderString({
    payload: r.payload,
    secret: r.secret,
    timestamp: r.timestamp,
  }));
  process.stdout.write(JSON.stringify(headers));
});
