// Verifies a key-based Sigstore bundle with @sigstore/verify, offline: an empty trusted
// root, the one public key under its hint, no transparency log or timestamp required.
// usage: node sigstore_verify.cjs BUNDLE.json ARTIFACT PUBLIC_KEY.pem
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const { bundleFromJSON } = require("@sigstore/bundle");
const { Verifier, toSignedEntity, toTrustMaterial } = require("@sigstore/verify");

const [bundlePath, artifactPath, keyPath] = process.argv.slice(2);
const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, "utf8")));
const key = crypto.createPublicKey(fs.readFileSync(keyPath));
const hint = bundle.verificationMaterial.content.publicKey.hint;
const root = { mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
  tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
const trust = toTrustMaterial(root, (wanted) => {
  if (wanted !== hint) throw new Error(`unknown key hint ${wanted}`);
  return { publicKey: key, validFor: () => true };
});
const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0,
  timestampThreshold: 0 });
try {
  verifier.verify(toSignedEntity(bundle, fs.readFileSync(artifactPath)));
  console.log("verified");
} catch (err) {
  console.log(`refused: ${err.code || ""} ${err.message}`);
  process.exit(1);
}
