# privateer: every developer and CI entry point. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools and builds that outlive a clone (cargo-installed tools, later the control plane).
cache := env_var_or_default("PRIVATEER_CACHE", env_var("HOME") / ".cache/privateer")

# List the recipes.
default:
    @just --list

# Regenerate checked-in files from the Rust types: the CRD (crd/ and the chart's crds/), the
# chart's values.schema.json and docs/configuration.md.
generate:
    cargo run -q -p privateer -- crd > crd/imagemirrors.privateer.dev.yaml.tmp
    mv crd/imagemirrors.privateer.dev.yaml.tmp crd/imagemirrors.privateer.dev.yaml
    cp crd/imagemirrors.privateer.dev.yaml charts/privateer/crds/imagemirrors.privateer.dev.yaml
    cargo run -q -p privateer -- config schema > target/config.schema.json
    python3 tests/chart_schema.py charts/privateer/values.schema.base.json target/config.schema.json \
        charts/privateer/values.schema.json docs/configuration.md

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

# Fuzz TARGET (or `all`, one after another) for SECONDS each, or for RUNS executions when
# given: reference, manifest, challenge, token, outcome, docker_config, admission. Seeds are
# checked in under fuzz/seeds/TARGET; what libFuzzer finds goes to fuzz/corpus (ignored).
# The last lines give executions and crashes per target (log: target/fuzz/TARGET.log).
fuzz target="all" seconds="60" runs="":
    #!/usr/bin/env bash
    set -euo pipefail
    export PATH="{{cache}}/bin:$PATH"
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --root "{{cache}}"
    cd fuzz
    # cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain here accept them.
    export RUSTC_BOOTSTRAP=1
    targets="{{target}}"
    [ "$targets" = all ] && targets="$(cargo fuzz list)"
    limit="-max_total_time={{seconds}}"
    [ -n "{{runs}}" ] && limit="-runs={{runs}}"
    mkdir -p ../target/fuzz
    summary=""
    for t in $targets; do
        mkdir -p "corpus/$t" "seeds/$t"
        # No sanitizer: the code is safe Rust (unsafe is forbidden), so coverage guidance is
        # what finds panics; ASan would only slow every execution down.
        status=0
        cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- "$limit" -print_final_stats=1 \
            > "../target/fuzz/$t.log" 2>&1 || status=$?
        runs_done="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "../target/fuzz/$t.log" | grep -oE '[0-9]+$' || echo 0)"
        crashes="$(ls artifacts/$t 2>/dev/null | wc -l)"
        summary+="$t: $runs_done executions, exit $status, $crashes crash artifacts"$'\n'
        if [ "$status" -ne 0 ]; then tail -n 30 "../target/fuzz/$t.log"; fi
    done
    printf '%s' "$summary"
    ! grep -q 'exit [1-9]' <<< "$summary"

# The main job on the local control plane: mirror, rewrite, gate, release, deny. Leaves the
# environment up for exploring (`just dev-down` stops it, privateer included).
demo:
    #!/usr/bin/env bash
    set -euo pipefail
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
    step "Starting the local environment (control plane, registries, ECR emulator)"
    just dev-up | grep -E '^environment|already runs'
    source target/dev/env
    bin="$(just _target-dir)/debug"
    step "Seeding the stand-in for Docker Hub"
    "$bin/privateer-dev" seed
    echo "(docker.io is served from $PRIVATEER_SOURCE_REGISTRY through sources.endpoints in the config)"
    # The dev configuration, with the :latest rule on.
    sed '/^  denyLatest:/{n;s/enabled: false/enabled: true/}' "$PRIVATEER_DEV_CONFIG" > target/dev/demo-config.yaml
    step "Installing the CRD and the webhooks (the Helm chart, webhooks calling this machine)"
    just dev-install target/dev/demo-config.yaml
    step "Running privateer (webhook + controller) in the background; log: target/dev/privateer.log"
    if [ -f target/dev/privateer.pid ] && kill -0 "$(cat target/dev/privateer.pid)" 2>/dev/null; then
        kill "$(cat target/dev/privateer.pid)"; sleep 1
    fi
    nohup "$bin/privateer" run --config target/dev/demo-config.yaml > target/dev/privateer.log 2>&1 &
    echo $! > target/dev/privateer.pid
    echo $! >> target/dev/pids
    metrics="$(sed -n '/^metrics:/,/^[a-z]/s/^  listen: //p' target/dev/demo-config.yaml)"
    for _ in $(seq 100); do curl -sf "http://$metrics/readyz" >/dev/null && break; sleep 0.2; done
    curl -sf "http://$metrics/readyz" >/dev/null || { tail -n 20 target/dev/privateer.log; exit 1; }
    echo "ready: /metrics, /healthz, /readyz on http://$metrics"
    step "kubectl apply -f examples/prewarm.yaml; kubectl apply -f examples/deployment.yaml (nginx:1.27)"
    kubectl apply -f examples/prewarm.yaml
    kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    kubectl apply -f examples/deployment.yaml
    pod_columns='NAME:.metadata.name,IMAGE:.spec.containers[0].image,GATES:.spec.schedulingGates[*].name'
    for _ in $(seq 50); do [ -n "$(kubectl -n demo get pods -o name)" ] && break; sleep 0.2; done
    step "The Pod as stored: rewritten to ECR, held by the privateer.dev/mirror gate"
    kubectl -n demo get pods -o custom-columns="$pod_columns"
    step "kubectl get imagemirrors (until every mirror is Ready)"
    for _ in $(seq 120); do
        phases="$(kubectl get imagemirrors -o jsonpath='{.items[*].status.phase}')"
        [ -n "$phases" ] && [ -z "$(tr ' ' '\n' <<< "$phases" | grep -v '^Ready$' || true)" ] && break
        sleep 0.5
    done
    kubectl get imagemirrors
    for _ in $(seq 60); do
        [ -z "$(kubectl -n demo get pods -o jsonpath='{.items[*].spec.schedulingGates}')" ] && break
        sleep 0.5
    done
    step "The Pod, released from its gate (no container runtime here, so it stays Pending)"
    kubectl -n demo get pods -o custom-columns="$pod_columns"
    step "kubectl -n demo run latest --image=busybox:latest (policy denyLatest)"
    denied="$(kubectl -n demo run latest --image=busybox:latest 2>&1 || true)"
    fold -s -w 100 <<< "$denied"
    # The demo fails loudly when privateer did not do its job.
    problems=""
    [ -z "$(kubectl get imagemirrors -o jsonpath='{.items[*].status.phase}' | tr ' ' '\n' | grep -v '^Ready$' || true)" ] \
        || problems+=" some ImageMirrors are not Ready;"
    [ -z "$(kubectl -n demo get pods -o jsonpath='{.items[*].spec.schedulingGates}')" ] || problems+=" the Pod is still gated;"
    kubectl -n demo get pods -o jsonpath='{.items[*].spec.containers[0].image}' | grep -q dkr.ecr \
        || problems+=" the Pod was not rewritten;"
    grep -q "policy denyLatest" <<< "$denied" || problems+=" the :latest Pod was not denied;"
    if [ -n "$problems" ]; then
        echo "demo FAILED:$problems (log: target/dev/privateer.log)"; tail -n 20 target/dev/privateer.log; exit 1
    fi
    step "Where to look next"
    echo "  source target/dev/env             # kubectl, helm, KUBECONFIG for this environment"
    echo "  kubectl get imagemirrors -o wide  # Target column: the image pinned by digest"
    echo "  kubectl describe imagemirror docker.io-library-nginx-1.27-6965a10c1529"
    echo "  curl -s http://$metrics/metrics | grep privateer_"
    echo "  less target/dev/privateer.log"
    echo "  just dev-down                     # stop everything"

# Install the CRD, RBAC and the webhook configurations for a privateer running on this machine
# (the Helm chart with no replicas: certificate from the local CA, clientConfig.url here).
dev-install config="":
    #!/usr/bin/env bash
    set -euo pipefail
    [ -f target/dev/env ] || { echo "the environment is not up: run just dev-up"; exit 1; }
    source target/dev/env
    config="{{config}}"
    config="${config:-$PRIVATEER_DEV_CONFIG}"
    { echo "config:"; sed 's/^/  /' "$config"; } > target/dev/dev-values.yaml
    kubectl create namespace privateer --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    kubectl -n privateer create secret tls privateer-dev-tls --cert target/dev/webhook.crt \
        --key target/dev/webhook.key --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    helm upgrade --install privateer charts/privateer -n privateer -f target/dev/dev-values.yaml \
        --set replicaCount=0 --set podDisruptionBudget.enabled=false \
        --set webhook.url="$PRIVATEER_DEV_WEBHOOK_URL" --set tls.mode=secret \
        --set tls.secretName=privateer-dev-tls --set tls.caBundle="$(base64 -w0 "$PRIVATEER_DEV_CA")" >/dev/null
    echo "installed the chart (0 replicas): CRD, RBAC, webhooks calling $PRIVATEER_DEV_WEBHOOK_URL"
    echo "run privateer against it with: just dev-run"

# Run `privateer run` in the foreground against the local environment (after dev-install).
dev-run config="":
    #!/usr/bin/env bash
    set -euo pipefail
    [ -f target/dev/env ] || { echo "the environment is not up: run just dev-up"; exit 1; }
    source target/dev/env
    cargo build -q -p privateer
    config="{{config}}"
    exec "$(just _target-dir)/debug/privateer" run --config "${config:-$PRIVATEER_DEV_CONFIG}"
