# privateer: every developer and CI entry point. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools and builds that outlive a clone (cargo-installed tools, later the control plane).
cache := env_var_or_default("PRIVATEER_CACHE", env_var("HOME") / ".cache/privateer")

# List the recipes.
default:
    @just --list

# Regenerate checked-in files from the Rust types (the CRD).
generate:
    cargo run -q -p privateer -- crd > crd/imagemirrors.privateer.dev.yaml.tmp
    mv crd/imagemirrors.privateer.dev.yaml.tmp crd/imagemirrors.privateer.dev.yaml

# Formatting and clippy, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Every test of the workspace (unit, property, CLI, CRD drift).
test:
    cargo test --workspace

# Fuzz the reference parser for SECONDS (cargo-fuzz, installed into the cache on first use).
fuzz seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    export PATH="{{cache}}/bin:$PATH"
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --root "{{cache}}"
    cd fuzz
    # cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain here accept them.
    RUSTC_BOOTSTRAP=1 cargo fuzz run reference -- -max_total_time={{seconds}}

# What privateer does with image references (the cluster demo arrives with the Helm/demo issue).
demo:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p privateer
    bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/privateer"
    registry=123456789012.dkr.ecr.eu-west-1.amazonaws.com
    echo "How privateer names what it mirrors into $registry (prefix: mirror):"
    for ref in nginx:1.27 quay.io/prometheus/node-exporter:v1.8.0 registry.k8s.io/pause:3.10 localhost:5000/team/app:v2; do
        printf '  %-42s -> %s\n' "$ref" "$("$bin" image target "$ref" --registry "$registry")"
        printf '  %-42s    ImageMirror %s\n' "" "$("$bin" image name "$ref")"
    done
    echo "An invalid reference is refused with the reason:"
    "$bin" image normalize 'docker.io/Library/nginx' 2>&1 | sed 's/^/  /' || true
    echo "The end-to-end demo on a local control plane ('kubectl get imagemirrors' going Ready) is not built yet."
