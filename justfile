# privateer: every developer and CI entry point. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools and builds that outlive a clone (cargo-installed tools, later the control plane).
cache := env_var_or_default("PRIVATEER_CACHE", env_var("HOME") / ".cache/privateer")

# List the recipes.
default:
    @just --list

# Regenerate checked-in files from the Rust types: the CRD (crd/ and the chart's crds/) and
# the chart's values.schema.json.
generate:
    cargo run -q -p privateer -- crd > crd/imagemirrors.privateer.dev.yaml.tmp
    mv crd/imagemirrors.privateer.dev.yaml.tmp crd/imagemirrors.privateer.dev.yaml
    cp crd/imagemirrors.privateer.dev.yaml charts/privateer/crds/imagemirrors.privateer.dev.yaml
    cargo run -q -p privateer -- config schema > target/config.schema.json
    python3 tests/chart_schema.py charts/privateer/values.schema.base.json target/config.schema.json charts/privateer/values.schema.json

# Formatting and clippy, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Install the local environment's parts (Debian packages, moto venv, control plane build).
setup:
    bash tests/setup.sh

# Every test: unit, property, CLI, CRD drift, and the end-to-end tier on the local environment.
test: setup
    cargo test --workspace

# Start the local environment in the background; `source target/dev/env` to use it.
dev-up:
    #!/usr/bin/env bash
    set -euo pipefail
    bash tests/setup.sh
    cargo build -q -p privateer -p privateer-e2e --bins
    mkdir -p target/dev
    if [ -f target/dev/dev.pid ] && kill -0 "$(cat target/dev/dev.pid)" 2>/dev/null; then
        echo "the environment already runs (just dev-status; just dev-down stops it)"
        exit 0
    fi
    rm -f target/dev/env
    started=$SECONDS
    nohup "$(just _target-dir)/debug/privateer-dev" up target/dev > target/dev/dev.log 2>&1 &
    until [ -f target/dev/env ]; do
        if ! kill -0 $! 2>/dev/null; then echo "dev-up failed:"; tail -n 20 target/dev/dev.log; exit 1; fi
        sleep 0.2
    done
    echo "environment up in $((SECONDS - started))s; use it with: source target/dev/env"
    cat target/dev/env

# Stop the local environment; no process is left behind.
dev-down:
    "$(just _target-dir)/debug/privateer-dev" down target/dev

# Report what of the local environment runs.
dev-status:
    "$(just _target-dir)/debug/privateer-dev" status target/dev

_target-dir:
    @cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'

# Benchmarks on loopback (release build); the table also lands in target/bench/.
# `just bench copy`: `privateer copy` vs `skopeo copy --all` vs a raw parallel stream.
# `just bench webhook`: /mutate under oha at concurrency 1, 16, 64 and at 2,000 requests/s.
bench what="copy" runs="5":
    #!/usr/bin/env bash
    set -euo pipefail
    bash tests/setup.sh
    export PATH="{{cache}}/bin:$PATH"
    if [ "{{what}}" = webhook ] && ! command -v oha >/dev/null; then
        cargo install --locked oha --version 1.16.0 --root "{{cache}}"
    fi
    cargo build --release -q -p privateer -p privateer-e2e --bin privateer --bin privateer-bench
    release="$(just _target-dir)/release"
    "$release/privateer-bench" {{what}} --runs {{runs}} --privateer "$release/privateer" --out target/bench/{{what}}.md

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
    bin="$(just _target-dir)/debug/privateer"
    registry=123456789012.dkr.ecr.eu-west-1.amazonaws.com
    echo "How privateer names what it mirrors into $registry (prefix: mirror):"
    for ref in nginx:1.27 quay.io/prometheus/node-exporter:v1.8.0 registry.k8s.io/pause:3.10 localhost:5000/team/app:v2; do
        printf '  %-42s -> %s\n' "$ref" "$("$bin" image target "$ref" --registry "$registry")"
        printf '  %-42s    ImageMirror %s\n' "" "$("$bin" image name "$ref")"
    done
    echo "An invalid reference is refused with the reason:"
    "$bin" image normalize 'docker.io/Library/nginx' 2>&1 | sed 's/^/  /' || true
    echo "The end-to-end demo on a local control plane ('kubectl get imagemirrors' going Ready) is not built yet."
