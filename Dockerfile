# syntax=docker/dockerfile:1
# One image with both binaries: the controller Deployment runs /usr/local/bin/ferrolb-controller
# and the speaker DaemonSet /usr/local/bin/ferrolb-speaker (deploy/ names this image
# example.invalid/ferrolb/ferrolb:0.1.0; push it under your registry's name and set that).
#
#   docker build -t example.invalid/ferrolb/ferrolb:0.1.0 .
#
# There is no ENTRYPOINT: the manifests name the binary to run.

# The toolchain the workspace is built and tested with (rust-version in Cargo.toml is the floor).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds (BuildKit); the
# binaries are copied out because the cached target/ is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferrolb-controller -p ferrolb-speaker \
    && install -D -m 0755 target/release/ferrolb-controller /out/ferrolb-controller \
    && install -D -m 0755 target/release/ferrolb-speaker /out/ferrolb-speaker

# glibc, libgcc and CA certificates, nothing else (no shell, no package manager); the same
# Debian release as the builder, so the glibc the binaries link against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The controller runs as this non-root user; the speaker's manifest runs it as root with every
# capability dropped but NET_RAW and NET_BIND_SERVICE (see deploy/speaker/daemonset.yaml).
USER 65532:65532
