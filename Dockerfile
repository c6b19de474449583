# syntax=docker/dockerfile:1
# One image with both binaries: the controller Deployment runs /usr/local/bin/ferrolb-controller
# and the speaker DaemonSet /usr/local/bin/ferrolb-speaker (deploy/ names this image
# example.invalid/ferrolb/ferrolb:0.1.0; push it under your registry's name and set that).
#
#   docker build --build-arg FERROLB_COMMIT=$(git rev-parse HEAD) -t example.invalid/ferrolb/ferrolb:0.1.0 .
#
# Without a container engine, deploy/image/build.sh builds the same image with buildah. Both take
# their files from deploy/image/rootfs.sh: static binaries, CA certificates, passwd and group for
# the non-root user, nothing else (no shell). There is no ENTRYPOINT: the manifests name the
# binary to run.

# The toolchain the workspace is built and tested with (rust-version in Cargo.toml is the floor).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# The build context has no .git (.dockerignore): --version takes the commit from here.
ARG FERROLB_COMMIT=unknown
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds (BuildKit); rootfs.sh
# copies the files out, because the cached target/ is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    FERROLB_COMMIT=${FERROLB_COMMIT} bash deploy/image/rootfs.sh /out

FROM scratch
ARG VERSION=0.1.0
ARG FERROLB_COMMIT=unknown
LABEL org.opencontainers.image.title=ferrolb \
      org.opencontainers.image.description="FerroLB controller and speaker: LoadBalancer addresses for bare-metal Kubernetes" \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${FERROLB_COMMIT} \
      org.opencontainers.image.licenses=Apache-2.0
COPY --from=build /out/ /
# The controller runs as this non-root user; the speaker's manifest runs it as root with every
# capability dropped but NET_RAW and NET_BIND_SERVICE (see deploy/speaker/daemonset.yaml).
USER 65532:65532
