#!/usr/bin/env node
// Verifies a wxauth JWT the way a Node service would: jose's createRemoteJWKSet + jwtVerify.
//
//     node verify_jwt.mjs JWKS_URL TOKEN ISSUER AUDIENCE
//
// Fetches the key set from JWKS_URL, picks the key by the token's kid, checks the signature,
// issuer, audience and expiry, and prints the claims as JSON. Exits 1 when the token is
// refused (the reason on stderr), 2 on a usage error.

import { createRemoteJWKSet, jwtVerify } from 'jose';

// The algorithms wxauth signs with; a token naming any other is refused.
const ALGORITHMS = ['EdDSA', 'ES256'];

const args = process.argv.slice(2);
if (args.length !== 4) {
  console.error('usage: node verify_jwt.mjs JWKS_URL TOKEN ISSUER AUDIENCE');
  process.exit(2);
}
const [jwksUrl, token, issuer, audience] = args;

try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    algorithms: ALGORITHMS,
    requiredClaims: ['exp', 'iat', 'iss', 'aud', 'sub'],
  });
  const sorted = Object.fromEntries(Object.entries(payload).sort(([a], [b]) => a.localeCompare(b)));
  console.log(JSON.stringify(sorted));
} catch (err) {
  console.error(`rejected: ${err.code ?? err.name}: ${err.message}`);
  process.exit(1);
}
