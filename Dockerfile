# syntax=docker/dockerfile:1@sha256:ecfaec9ed6d810b56388c508f4121597bfbba70d41a6dfeee4d8cad5f295fc32
#
# Keysmith container image: one binary on distroless, running as non-root (65532).
#   docker build -t keysmith:dev .
#   docker run --rm keysmith:dev --help
# The Helm chart (charts/keysmith) runs it as `keysmith run`, `keysmith controller` or
# `keysmith verifier`. Released images (ghcr.io/<owner>/keysmith, linux/amd64 and linux/arm64)
# are built from this file by .github/workflows/release.yml, which adds the version labels.
#
# Base images (and the Dockerfile frontend named by `syntax=`) are pinned by the digest of their
# multi-platform index, so a build is repeatable and a moved tag changes nothing until the digest
# here changes; the tag stays for readers and for Dependabot. To bump one, resolve the tag's
# current index digest (the first `Digest:` line, not a per-platform one) and replace it here
# (docs/releasing.md, "Base images"):
#   docker buildx imagetools inspect rust:1.95-bookworm

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
# A multi-platform build runs this stage once per platform: each gets its own target cache, so
# one platform's binary is never copied into the other's image.
ARG TARGETARCH
WORKDIR /src
# The whole workspace (see .dockerignore). --locked builds exactly the committed Cargo.lock;
# --no-default-features leaves the API emulator of `keysmith dev` out of the production binary
# (51 fewer crates, 21.4 MB instead of 27.2 MB).
COPY . .
# Cache the registry and the target directory between builds (BuildKit), then copy the binary
# out of the cache mount so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,id=keysmith-target-$TARGETARCH,target=/src/target \
    cargo build --release --locked --no-default-features --bin keysmith \
 && cp target/release/keysmith /keysmith

# glibc + libgcc (what a Rust binary built on bookworm links against), CA certificates, no shell.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
LABEL org.opencontainers.image.title="keysmith" \
      org.opencontainers.image.description="Kubernetes operator that manages API keys as custom resources"
COPY --from=build /keysmith /keysmith
# 8080: verifier HTTP API; 9090: /metrics, /healthz, /readyz.
EXPOSE 8080 9090
USER 65532:65532
ENTRYPOINT ["/keysmith"]
