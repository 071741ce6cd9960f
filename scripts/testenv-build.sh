#!/usr/bin/env bash
# Builds the testenv binaries into testenv/bin, skipping the build when a stamp of the
# inputs matches the one recorded last time:
# `make test` calls cluster-up every run and a no-op go build of kube-apiserver still
# costs tens of seconds of linking checks.
set -euo pipefail
cd "$(dirname "$0")/../testenv"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
K8S_VERSION=v1.37.2
BIN=bin
mkdir -p "$BIN"

# Two stamps: the control plane depends only on the module files and the version (which
# fixes the ldflags), so editing the node agent does not relink kube-apiserver.
cp_stamp() { { cat go.mod go.sum; echo "$K8S_VERSION"; } | sha256sum | cut -d' ' -f1; }
own_stamp() {
  { cat go.mod go.sum etcd/go.mod etcd/go.sum images.yaml ../scripts/testenv-build.sh
    find . -name '*.go' -not -path './bin/*' -print0 | sort -z | xargs -0 cat
  } | sha256sum | cut -d' ' -f1
}
fresh() { # fresh STAMPFILE HASH BINARIES...
  local f=$1 h=$2; shift 2
  for b in "$@"; do [[ -x $BIN/$b ]] || return 1; done
  [[ -f $BIN/$f && $(cat "$BIN/$f") == "$h" ]]
}
control_plane=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
own=(testenv-etcd testenv-node testenv-certs)
# The real node's kubelet and kube-proxy (TESTENV_NODE=real), same module, same stamp
# inputs as the control plane; built only when asked for.
real_node=(kubelet kube-proxy)
want_cp=$(cp_stamp)
want_own=$(own_stamp)
node_fresh() { [[ ${TESTENV_NODE:-sim} != real ]] || fresh .stamp-node "$want_cp" "${real_node[@]}"; }
if fresh .stamp-cp "$want_cp" "${control_plane[@]}" && fresh .stamp-own "$want_own" "${own[@]}" && node_fresh; then
  echo "testenv: binaries up to date"
  exit 0
fi

major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
ld=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
ld+=" -s -w"

# One binary at a time with -p 2: linking kube-apiserver peaks at several GiB and the CPU is shared.
if ! fresh .stamp-cp "$want_cp" "${control_plane[@]}"; then
  for b in "${control_plane[@]}"; do
    echo "testenv: building $b $K8S_VERSION"
    go build -p 2 -trimpath -ldflags "$ld" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$BIN/$b.tmp" "$BIN/$b"
  done
  echo "$want_cp" > "$BIN/.stamp-cp"
fi
if ! node_fresh; then
  for b in "${real_node[@]}"; do
    echo "testenv: building $b $K8S_VERSION"
    t=$SECONDS
    go build -p 2 -trimpath -ldflags "$ld" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$BIN/$b.tmp" "$BIN/$b"
    echo "testenv: $b built in $((SECONDS - t))s"
  done
  echo "$want_cp" > "$BIN/.stamp-node"
fi
fresh .stamp-own "$want_own" "${own[@]}" && exit 0
echo "testenv: building testenv-node, testenv-certs"
go build -p 2 -trimpath -ldflags "$ld" -o "$BIN/" ./cmd/testenv-node ./cmd/testenv-certs
echo "testenv: building testenv-etcd"
(cd etcd && go build -p 2 -trimpath -o "../$BIN/testenv-etcd" .)
echo "$want_own" > "$BIN/.stamp-own"
