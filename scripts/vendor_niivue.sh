#!/usr/bin/env bash
# Fetch the NiiVue bundle the HTML reports inline (brats_keras/report/static/), or check the one there.
#
#   scripts/vendor_niivue.sh          # npm pack @niivue/niivue@0.69.0, copy dist/niivue.umd.js, check its sha256
#
# The UMD build is one file with no further imports: inlined in a classic <script> it defines window.niivue, so a
# report opens from file:// with no network. The npm tarball carries no LICENSE file; NIIVUE_LICENSE beside the
# bundle is the repository's BSD-2-Clause text (package.json: "license": "BSD-2-Clause").
set -euo pipefail
VERSION=0.69.0
SHA256=47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af   # of dist/niivue.umd.js
TARBALL_SHA256=6e9a6a471b428eb3b258a0086beca9187d95e43a781a39e8a519c6da246af485  # of niivue-niivue-$VERSION.tgz
dest="$(cd "$(dirname "$0")/.." && pwd)/brats_keras/report/static/niivue-$VERSION.umd.js"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack -q "@niivue/niivue@$VERSION" >/dev/null && tar xzf "niivue-niivue-$VERSION.tgz")
echo "$TARBALL_SHA256  $tmp/niivue-niivue-$VERSION.tgz" | sha256sum -c -
echo "$SHA256  $tmp/package/dist/niivue.umd.js" | sha256sum -c -
cp "$tmp/package/dist/niivue.umd.js" "$dest"
echo "wrote $dest"
