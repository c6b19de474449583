#!/usr/bin/env bash
# Builds the root filesystem of FerroLB's image in OUT, and nothing else goes into the image:
# the controller and the speaker as static release binaries (no libc or loader to ship), the CA
# certificates, and passwd / group naming the non-root user 65532. No shell, no package manager.
# The Dockerfile and deploy/image/build.sh (buildah) both build the image from it, so both have
# this layout.
#
#   FERROLB_COMMIT=<hash> bash deploy/image/rootfs.sh OUT
set -euo pipefail
out=$(realpath -m "$1")
cd "$(dirname "$0")/../.."
command -v readelf >/dev/null || { echo "rootfs.sh: readelf (binutils) is needed" >&2; exit 1; }

target=$(rustc -vV | sed -n 's/^host: //p')
# --version prints it (build/version.rs); a tree without .git (a Docker context) passes it in.
FERROLB_COMMIT=${FERROLB_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export FERROLB_COMMIT
# With --target, RUSTFLAGS reach only the target's code, not build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" -p ferrolb-controller -p ferrolb-speaker

built=${CARGO_TARGET_DIR:-target}/$target/release
for bin in ferrolb-controller ferrolb-speaker; do
  # A static binary asks for no program interpreter (the image has no ld.so to give it).
  headers=$(LC_ALL=C readelf -l "$built/$bin")
  if grep -q 'program interpreter' <<<"$headers"; then
    echo "rootfs.sh: $bin is dynamically linked" >&2
    exit 1
  fi
  install -D -m 0755 "$built/$bin" "$out/usr/local/bin/$bin"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 deploy/image/passwd "$out/etc/passwd"
install -D -m 0644 deploy/image/group "$out/etc/group"
