#!/usr/bin/env bash
# Builds FerroLB's image without a container engine or daemon: buildah with vfs storage (runs
# nothing inside the image, so no isolation is needed), from deploy/image/rootfs.sh's files, on
# an empty base. Then, with --check, verifies what a registry and a kubelet would see:
# the user is 65532 (non-root), OCI labels carry the version and the commit, the filesystem
# holds exactly the files of rootfs.sh (no shell), and each binary, run from the image's own
# filesystem as that user, prints the version and the commit; the image is removed afterwards.
#
#   sudo bash deploy/image/build.sh [IMAGE]           # IMAGE: default the manifests' name
#   sudo bash deploy/image/build.sh --check [IMAGE]   # build, check, remove (CI)
#   buildah --storage-driver vfs push IMAGE docker://registry.example/ferrolb:TAG
set -euo pipefail
cd "$(dirname "$0")/../.."

check=false
if [ "${1:-}" = --check ]; then
  check=true
  shift
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
commit=${FERROLB_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
image=${1:-example.invalid/ferrolb/ferrolb:$version}
if $check; then
  image=localhost/ferrolb-check:$$
fi

b() { buildah --storage-driver vfs "$@"; }
root=$(mktemp -d)
ctr=
look=
cleanup() {
  [ -n "$look" ] && { b umount "$look" >/dev/null 2>&1 || true; b rm "$look" >/dev/null 2>&1 || true; }
  [ -n "$ctr" ] && { b rm "$ctr" >/dev/null 2>&1 || true; }
  if $check; then b rmi -f "$image" >/dev/null 2>&1 || true; fi
  rm -rf "$root"
}
trap cleanup EXIT

FERROLB_COMMIT=$commit bash deploy/image/rootfs.sh "$root"

ctr=$(b from scratch)
b copy "$ctr" "$root/" / >/dev/null
b config \
  --user 65532:65532 \
  --workingdir / \
  --label org.opencontainers.image.title=ferrolb \
  --label "org.opencontainers.image.description=FerroLB controller and speaker: LoadBalancer addresses for bare-metal Kubernetes" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$commit" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.created="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "$ctr"
b commit --quiet --format oci "$ctr" "$image" >/dev/null
echo "built $image (version $version, commit $commit)"
$check || exit 0

fail() {
  echo "image check: $*" >&2
  exit 1
}
field() { b inspect --type image --format "$1" "$image"; }
[ "$(field '{{.OCIv1.Config.User}}')" = 65532:65532 ] || fail "user is $(field '{{.OCIv1.Config.User}}'), not 65532:65532"
[ "$(field '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}')" = "$version" ] || fail "no version label"
[ "$(field '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}')" = "$commit" ] || fail "no revision label"

look=$(b from "$image")
fs=$(b mount "$look")
files=$(cd "$fs" && find . -mindepth 1 ! -type d | sort | tr '\n' ' ')
want="./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/ferrolb-controller ./usr/local/bin/ferrolb-speaker "
[ "$files" = "$want" ] || fail "files are [$files], want [$want]"
[ ! -e "$fs/bin/sh" ] || fail "the image has a shell"
for bin in ferrolb-controller ferrolb-speaker; do
  out=$(chroot --userspec=65532:65532 "$fs" "/usr/local/bin/$bin" --version) || fail "$bin --version failed in the image"
  [ "$out" = "$bin $version (commit $commit)" ] || fail "$bin --version printed [$out]"
  echo "  $out"
done
echo "image check passed: user 65532, labels, files, no shell, both binaries run from the image"
