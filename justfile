# privateer: every developer and CI entry point. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools and builds that outlive a clone (cargo-installed tools, later the control plane).
cache := env_var_or_default("PRIVATEER_CACHE", env_var("HOME") / ".cache/privateer")

# This clone, for the harness's programs (a binary built in another clone sharing the cached
# target directory would otherwise name that clone).
export PRIVATEER_WORKSPACE := justfile_directory()

# List the recipes.
default:
    @just --list

# Regenerate checked-in files from the Rust types: the CRD (crd/ and the chart's crds/), the
# chart's values.schema.json and docs/configuration.md.
generate:
    cargo run -q -p privateer -- crd > crd/imagemirrors.privateer.dev.yaml.tmp
    mv crd/imagemirrors.privateer.dev.yaml.tmp crd/imagemirrors.privateer.dev.yaml
    cp crd/imagemirrors.privateer.dev.yaml charts/privateer/crds/imagemirrors.privateer.dev.yaml
    # A temporary file: the target directory may live outside the checkout (CARGO_TARGET_DIR).
    schema=$(mktemp) && trap 'rm -f "$schema"' EXIT && \
        cargo run -q -p privateer -- config schema > "$schema" && \
        python3 tests/chart_schema.py charts/privateer/values.schema.base.json "$schema" \
            charts/privateer/values.schema.json docs/configuration.md

# Formatting and clippy, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Install the local environment's parts (Debian packages, moto venv, control plane build).
setup:
    bash tests/setup.sh

# Every test: unit, property, CLI, CRD drift, and the end-to-end tier on the local environment
# (its node runs privateer's image, so `image` comes first).
test: setup image
    cargo test --workspace

# privateer's image without a container engine: the release binary, the libraries it links, CA
# certificates and user 65532, as the Dockerfile's runtime stage has them, written as an OCI
# layout to target/image (same binary, same digest). With REF it is also copied there by
# `privateer copy` with ARGS: ECR takes the AWS credential chain; another registry
# `--dest-authfile ~/.docker/config.json`.
image ref="" *args:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -q -p privateer
    cargo build -q -p privateer-e2e --bin privateer-dev
    dir="$(just _target-dir)"
    "$dir/debug/privateer-dev" image "$dir/release/privateer"
    if [ -n "{{ref}}" ]; then
        PRIVATEER_BIN="$dir/release/privateer" "$dir/debug/privateer-dev" image-push "{{ref}}" {{args}}
    fi

# Start the local environment in the background; `source target/dev/env` to use it.
dev-up:
    #!/usr/bin/env bash
    set -euo pipefail
    bash tests/setup.sh
    just image >/dev/null
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
# `just bench scale`: 1,000 ImageMirrors pre-warmed inline and through copy Jobs on the real
# node, and a 500-replica Deployment burst (`--only inline|jobs|burst|size`, `--count N`,
# `--replicas N`, `--concurrency N` after RUNS).
bench what="copy" runs="" *args:
    #!/usr/bin/env bash
    set -euo pipefail
    bash tests/setup.sh
    export PATH="{{cache}}/bin:$PATH"
    if [ "{{what}}" = webhook ] && ! command -v oha >/dev/null; then
        cargo install --locked oha --version 1.16.0 --root "{{cache}}"
    fi
    # The copy Jobs on the node run privateer's image.
    if [ "{{what}}" = scale ]; then just image >/dev/null; fi
    cargo build --release -q -p privateer -p privateer-e2e --bin privateer --bin privateer-bench
    release="$(just _target-dir)/release"
    runs="{{runs}}"
    "$release/privateer-bench" {{what}} ${runs:+--runs "$runs"} --privateer "$release/privateer" --out target/bench/{{what}}.md {{args}}

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

# The main job on the local one-node cluster: `helm install` privateer from its image, then a
# Deployment of nginx:1.27 rewritten, gated, mirrored by a copy Job, released and Running from
# the mirror; a :latest Pod denied. Leaves the environment up (`just dev-down` stops it).
demo:
    #!/usr/bin/env bash
    set -euo pipefail
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
    step "Starting the local cluster (control plane, node, registries, ECR emulator)"
    just dev-up | grep -E '^environment|already runs'
    source target/dev/env
    bin="$(just _target-dir)/debug"
    step "Seeding the stand-in for Docker Hub"
    "$bin/privateer-dev" seed
    step "helm install privateer (image $PRIVATEER_IMAGE, policy denyLatest on)"
    helm upgrade --install privateer charts/privateer -n privateer --create-namespace \
        -f "$PRIVATEER_DEV_VALUES" --set config.policy.denyLatest.enabled=true --wait --timeout 180s \
        | sed -n '/^NOTES/,$p' | head -n 3
    kubectl -n privateer get pods -l app.kubernetes.io/component=run -o wide
    kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    # Ready replicas are not yet a reachable Service (kube-proxy programs it a moment later):
    # a server-side dry run shows when the API server gets answers from the webhook.
    for _ in $(seq 120); do
        kubectl -n demo run trial --image=nginx:1.27 --dry-run=server -o jsonpath='{.spec.containers[0].image}' \
            2>/dev/null | grep -q dkr.ecr && break
        sleep 0.5
    done
    step "kubectl apply -f examples/prewarm.yaml -f examples/deployment.yaml (nginx:1.27)"
    kubectl apply -f examples/prewarm.yaml
    kubectl apply -f examples/deployment.yaml
    step "kubectl get imagemirrors (until every mirror is Ready)"
    for _ in $(seq 240); do
        phases="$(kubectl get imagemirrors -o jsonpath='{.items[*].status.phase}')"
        [ -n "$phases" ] && [ -z "$(tr ' ' '\n' <<< "$phases" | grep -v '^Ready$' || true)" ] && break
        sleep 0.5
    done
    kubectl get imagemirrors
    step "The Pod, Running from the mirror"
    kubectl -n demo wait --for=condition=Ready pod -l app=web --timeout=120s >/dev/null || true
    kubectl -n demo get pods -o wide
    kubectl -n demo get pods -l app=web -o jsonpath='{range .items[*]}image:   {.spec.containers[0].image}{"\n"}imageID: {.status.containerStatuses[0].imageID}{"\n"}{end}'
    step "One HTTP answer, from a Pod in a namespace privateer skips, through the Service"
    kubectl create namespace probe --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    kubectl label namespace probe privateer.dev/skip=true --overwrite >/dev/null
    kubectl -n probe delete pod probe --ignore-not-found >/dev/null
    ip="$(kubectl -n demo get service web -o jsonpath='{.spec.clusterIP}')"
    kubectl -n probe run probe --image=nginx:1.27 --restart=Never --command -- wget -q -O - "http://$ip/" >/dev/null
    kubectl -n probe wait --for=jsonpath='{.status.phase}'=Succeeded pod/probe --timeout=60s >/dev/null || true
    answer="$(kubectl -n probe logs probe 2>&1 || true)"
    echo "GET http://$ip/ -> $answer"
    step "The copy Jobs' Pods"
    kubectl -n privateer get pods -l job-name
    step "kubectl -n demo run latest --image=busybox:latest (policy denyLatest)"
    denied="$(kubectl -n demo run latest --image=busybox:latest 2>&1 || true)"
    fold -s -w 100 <<< "$denied"
    # The demo fails loudly when privateer did not do its job.
    problems=""
    [ -z "$(kubectl get imagemirrors -o jsonpath='{.items[*].status.phase}' | tr ' ' '\n' | grep -v '^Ready$' || true)" ] \
        || problems+=" some ImageMirrors are not Ready;"
    image="$(kubectl -n demo get pods -l app=web -o jsonpath='{.items[0].spec.containers[0].image}')"
    image_id="$(kubectl -n demo get pods -l app=web -o jsonpath='{.items[0].status.containerStatuses[0].imageID}')"
    grep -q dkr.ecr <<< "$image" || problems+=" the Pod was not rewritten;"
    [ -n "$image_id" ] && [ "${image##*@}" = "${image_id##*@}" ] || problems+=" the Pod does not run the mirror's digest;"
    grep -q "served by nginx" <<< "$answer" || problems+=" no HTTP answer from the Pod;"
    kubectl -n privateer get pods -l job-name -o jsonpath='{.items[*].status.phase}' | grep -q Succeeded \
        || problems+=" no copy Job Pod Completed;"
    grep -q "policy denyLatest" <<< "$denied" || problems+=" the :latest Pod was not denied;"
    if [ -n "$problems" ]; then
        echo "demo FAILED:$problems"; kubectl -n privateer logs -l app.kubernetes.io/component=run --tail=20 || true; exit 1
    fi
    step "Where to look next"
    echo "  source target/dev/env             # kubectl, helm, KUBECONFIG for this environment"
    echo "  kubectl get imagemirrors -o wide  # Target column: the image pinned by digest"
    echo "  kubectl -n privateer logs deploy/privateer"
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
