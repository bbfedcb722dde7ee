# privateer's image: one binary for the webhook, the controller and the copy Jobs.
#   docker build -t ghcr.io/privateer-dev/privateer:0.1.0 .
# Build stage: the workspace, release profile, locked dependencies.
FROM rust:1.95-bookworm AS build
# aws-lc-rs (TLS and the AWS SDK's crypto) builds C code with cmake and clang.
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p privateer \
    && install -D -m 0755 target/release/privateer /out/privateer

# Runtime: distroless (glibc, CA certificates, no shell), non-root, nothing writable needed
# (the chart mounts an emptyDir at /tmp and sets a read-only root filesystem).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/privateer /usr/local/bin/privateer
USER 65532:65532
# Copy Jobs run /usr/local/bin/privateer copy …; the chart's Deployments pass run|webhook|controller.
ENTRYPOINT ["/usr/local/bin/privateer"]
CMD ["--help"]
