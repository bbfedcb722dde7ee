#!/usr/bin/env bash
# Installs what the local environment needs, idempotently; a warm run takes a second or two.
#   Debian: docker-registry (the registries), skopeo and curl (the copy benchmark's baselines),
#           containerd, runc, CNI plugins and iptables (the node), busybox-static (runnable
#           test images)
#   PyPI:   moto[server] in a venv under the cache (the ECR API)
#   Go:     etcd, kube-apiserver, kube-controller-manager, kubectl, helm (tests/controlplane);
#           cosign, oras, promtool, a registry with the referrers API (tests/peers)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PRIVATEER_CACHE:-$HOME/.cache/privateer}
MOTO_VERSION=5.2.5

missing=()
# package:file-it-installs
for wanted in docker-registry:/usr/bin/docker-registry skopeo:/usr/bin/skopeo curl:/usr/bin/curl \
    containerd:/usr/bin/containerd runc:/usr/sbin/runc \
    containernetworking-plugins:/usr/lib/cni/bridge iptables:/usr/sbin/iptables \
    busybox-static:/bin/busybox; do
    [ -x "${wanted#*:}" ] || missing+=("${wanted%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts a system registry on :5000 on install; the tests run their own.
# Debian's containerd starts a system daemon too; the node runs its own (tests/src/node.rs).
for service in docker-registry containerd; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    fi
done

venv="$cache/moto-venv"
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$venv/.version" 2>/dev/null)" != "$MOTO_VERSION" ]; then
    echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    echo "$MOTO_VERSION" > "$venv/.version"
fi

"$here/controlplane/build.sh" >/dev/null
# cosign, oras and a registry with the referrers API (the supply-chain tests' peers), promtool.
"$here/peers/build.sh" >/dev/null

# The node's sandbox program: static, so the pause image is this one file.
pause="$cache/bin/pause"
if [ ! -x "$pause" ] || [ "$here/node/pause.rs" -nt "$pause" ]; then
    mkdir -p "$cache/bin"
    rustc -O -C target-feature=+crt-static -C strip=symbols "$here/node/pause.rs" -o "$pause.partial"
    mv "$pause.partial" "$pause"
fi
