#!/usr/bin/env bash
# make images: the shortener and operator images from Dockerfile.shortener and
# Dockerfile.operator (their `offline` target: static binaries FROM scratch), and testenv's
# pause image, built with buildah without any registry, saved as OCI archives:
#   .images/shortener.tar           shortener:<version>
#   .images/shortener-operator.tar  shortener-operator:<version>
#   .images/pause.tar               pause:<version> (testenv/images/Dockerfile.pause)
# (<version> is the workspace version, the chart's appVersion.) Load one into containerd
# with `ctr -n k8s.io images import .images/X.tar`; the real node's cluster-up does that.
# The release binaries are built static in their own target directory (target/static), so
# the debug build in target/ is not invalidated. Skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/.images
STATE=$OUT/buildah
TRIPLE=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=$ROOT/target/static
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[[ -n $VERSION ]] || { echo "images: no version in Cargo.toml" >&2; exit 1; }
for tool in buildah cargo go; do
  command -v "$tool" >/dev/null || { echo "images: $tool not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
mkdir -p "$OUT"

t0=$SECONDS
echo "images: cargo build --release (static, $TRIPLE) -p shortener -p operator"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$TRIPLE" \
  -p shortener -p operator --bin shortener --bin operator
echo "images: static pause binary"
(cd testenv && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$OUT/pause" ./cmd/testenv-pause)
echo "images: binaries in $((SECONDS - t0))s"

# buildah keeps its own storage here, not in the machine's /var/lib/containers.
B=(buildah --root "$STATE/storage" --runroot "$STATE/run" --storage-driver overlay)

# build NAME DOCKERFILE TARGET BINARY...: the static build context holds just the binaries
# and an empty data/ directory; the archive is rebuilt only when its inputs changed. The
# offline stages read only that context, so it is the main context too (the repository,
# target/ included, is never scanned); the skipped builder stage would want the repository.
build() {
  local name=$1 dockerfile=$2 target=$3; shift 3
  local ctx=$OUT/context-$name ref=localhost/$name:$VERSION stamp
  rm -rf "$ctx" && mkdir -p "$ctx/data"
  cp "$@" "$ctx/"
  stamp=$({ cat "$dockerfile"; echo "$VERSION"; sha256sum "$@" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
  if [[ -f $OUT/$name.tar && -f $OUT/$name.stamp && $(cat "$OUT/$name.stamp") == "$stamp" ]]; then
    echo "images: $name:$VERSION up to date ($OUT/$name.tar)"
    return
  fi
  local t=$SECONDS args=()
  [[ -n $target ]] && args+=(--target "$target")
  echo "images: buildah bud -f $dockerfile ${args[*]} -> $ref"
  # --pull=never: no registry; the offline stages start FROM scratch. runc, not crun
  # (crun refuses this machine's hybrid cgroups).
  # --network none and a CNI config directory of its own: otherwise buildah creates
  # /etc/cni/net.d on the machine. (buildah push still keeps its small blob-info cache in
  # /var/lib/containers/cache; no option moves it.)
  "${B[@]}" bud --quiet --pull=never --runtime /usr/sbin/runc --layers=false \
    --network none --cni-config-dir "$STATE/cni" \
    -f "$dockerfile" "${args[@]}" --build-context "static=$ctx" -t "$ref" "$ctx" >/dev/null
  rm -f "$OUT/$name.tar"
  "${B[@]}" push --quiet "$ref" "oci-archive:$OUT/$name.tar:docker.io/library/$name:$VERSION"
  echo "$stamp" >"$OUT/$name.stamp"
  echo "images: $name:$VERSION in $((SECONDS - t))s, $(du -h "$OUT/$name.tar" | cut -f1) ($OUT/$name.tar)"
}
bin=$CARGO_TARGET_DIR/$TRIPLE/release
build shortener Dockerfile.shortener offline "$bin/shortener"
# The operator's image carries a CA bundle (its HTTPS webhooks), as distroless does.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ -s $CA_BUNDLE ]] || { echo "images: no $CA_BUNDLE (apt-get install ca-certificates)" >&2; exit 1; }
build shortener-operator Dockerfile.operator offline "$bin/operator" "$CA_BUNDLE"
build pause testenv/images/Dockerfile.pause "" "$OUT/pause"
echo "images: done in $((SECONDS - t0))s"
