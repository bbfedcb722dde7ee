#!/usr/bin/env bash
# Builds the supply-chain test peers from the Go module proxy, once per version, into
# $PRIVATEER_CACHE/peers/bin, and prints that directory:
#   cosign        signs and attests test images, verifies the mirrored copies
#   oras          attaches an artifact with a subject (an SBOM) and discovers it
#   promtool      checks and unit-tests the chart's PrometheusRule
#   referrers-registry  go-containerregistry's registry with the OCI 1.1 referrers API on
#                 (./referrers-registry; Debian's distribution 2.8 and distribution v3.1
#                 have no referrers API, zot is not on the module proxy)
# A warm run only checks that the binaries are there.
set -euo pipefail
COSIGN_VERSION=v2.6.5
ORAS_VERSION=v1.3.6
# Prometheus 3.x's Go module version (v0.3xx.y is Prometheus 3.xx.y).
PROMTOOL_VERSION=v0.316.0
cache=${PRIVATEER_CACHE:-$HOME/.cache/privateer}
bin="$cache/peers/bin"
mkdir -p "$bin"
exec 9>"$bin/.lock"
flock 9
export GOTOOLCHAIN=local GOFLAGS=-trimpath

# install NAME VERSION PACKAGE: go install into a temporary directory, then rename, so an
# interrupted build never leaves a binary that looks finished.
install() {
    local name=$1 version=$2 package=$3
    [ -x "$bin/$name-$version" ] && return 0
    echo "building $name $version (first run on this machine; cached afterwards)" >&2
    local started=$SECONDS tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" go install -ldflags "-s -w" "$package@$version"
    mv "$tmp/$(basename "$package")" "$bin/$name-$version"
    rm -rf "$tmp"
    echo "built $name in $((SECONDS - started))s" >&2
}
install cosign "$COSIGN_VERSION" github.com/sigstore/cosign/v2/cmd/cosign
install oras "$ORAS_VERSION" oras.land/oras/cmd/oras
install promtool "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/promtool
here=$(cd "$(dirname "$0")" && pwd)
# Keyed by the sources' content, not their path: every CI clone lives elsewhere.
referrers="$bin/referrers-registry-$(cat "$here/referrers-registry/"{go.mod,go.sum,main.go} | sha256sum | cut -c1-12)"
if [ ! -x "$referrers" ]; then
    echo "building referrers-registry (first run on this machine; cached afterwards)" >&2
    (cd "$here/referrers-registry" && go build -ldflags "-s -w" -o "$referrers.partial" .)
    mv "$referrers.partial" "$referrers"
    find "$bin" -name 'referrers-registry-*' ! -name "$(basename "$referrers")" -delete
fi
ln -sf "$(basename "$referrers")" "$bin/referrers-registry"
ln -sf "cosign-$COSIGN_VERSION" "$bin/cosign"
ln -sf "oras-$ORAS_VERSION" "$bin/oras"
ln -sf "promtool-$PROMTOOL_VERSION" "$bin/promtool"
echo "$bin"
