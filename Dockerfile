# syntax=docker/dockerfile:1
#
# Keysmith container image: one binary on distroless, running as non-root (65532).
#   docker build -t keysmith:0.1.0 .
#   docker run --rm keysmith:0.1.0 --help
# The Helm chart (charts/keysmith) runs it as `keysmith run`, `keysmith controller` or
# `keysmith verifier`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace (see .dockerignore). --locked builds exactly the committed Cargo.lock;
# --no-default-features leaves the API emulator of `keysmith dev` out of the production binary
# (51 fewer crates, 21.4 MB instead of 27.2 MB).
COPY . .
# Cache the registry and the target directory between builds (BuildKit), then copy the binary
# out of the cache mount so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin keysmith \
 && cp target/release/keysmith /keysmith

# glibc + libgcc (what a Rust binary built on bookworm links against), CA certificates, no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="keysmith" \
      org.opencontainers.image.description="Kubernetes operator that manages API keys as custom resources" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /keysmith /keysmith
# 8080: verifier HTTP API; 9090: /metrics, /healthz, /readyz.
EXPOSE 8080 9090
USER 65532:65532
ENTRYPOINT ["/keysmith"]
