#!/usr/bin/env bash
# Builds the local control plane from the Go module proxy, once per version set, into
# $PRIVATEER_CACHE/controlplane/<versions>/bin, and prints that directory.
# A warm run only checks that the binaries are there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${PRIVATEER_CACHE:-$HOME/.cache/privateer}
bin="$cache/controlplane/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}/bin"
mkdir -p "$bin"
# One build at a time per cache (a test run and `just dev-up` may both ask).
exec 9>"$bin/.lock"
flock 9
export GOTOOLCHAIN=local GOFLAGS=-trimpath

# build NAME DIR PACKAGE [LDFLAGS]: go build into a temporary file, then rename, so an
# interrupted build never leaves a binary that looks finished.
build() {
    local name=$1 dir=$2 package=$3 ldflags=${4:-}
    [ -x "$bin/$name" ] && return 0
    echo "building $name (first run on this machine; cached afterwards)" >&2
    local started=$SECONDS
    (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$bin/$name.partial" "$package")
    mv "$bin/$name.partial" "$bin/$name"
    echo "built $name in $((SECONDS - started))s" >&2
}

minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
kube_version="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
for component in kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy; do
    build "$component" "$here/kube" "./cmd/$component" "$kube_version"
done
build etcd "$here/etcd" . "-X go.etcd.io/etcd/api/v3/version.GitSHA=privateer"
# helm's own go.mod has no replace directives, so it builds straight from its module.
if [ ! -x "$bin/helm" ]; then
    echo "building helm (first run on this machine; cached afterwards)" >&2
    tmp=$(mktemp -d)
    GOBIN="$tmp" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mv "$tmp/helm" "$bin/helm"
    rmdir "$tmp"
fi
echo "$bin"
