# Sourced by testenv-up.sh and testenv-down.sh: the real node (TESTENV_NODE=real).
# containerd + runc, the bridge CNI plugin, kubelet and kube-proxy (iptables) v1.37.2,
# with the control plane, all inside one network namespace and one mount namespace of
# their own (see testenv/README.md, "Real node"):
# - network: the namespace has only loopback and the bridge testenv0 (node IP 10.244.0.1,
#   pods 10.244.0.0/24, Services 10.96.0.0/16). It has no interface to the outside, so
#   nothing a pod or test sends can leave the machine, and the fixed ports do not collide
#   with a simulated cluster in the host namespace. Its iptables rules and net.* sysctls
#   (ip_forward, bridge-nf-call-iptables) die with it.
# - mounts: /run is a fresh tmpfs and /var/lib, /var/log are bind mounts of .testenv/real/,
#   so containerd's and kubelet's fixed paths (/run/containerd, /run/netns,
#   /var/lib/kubelet, /var/log/containers, /var/lib/cni) never touch the host's, and every
#   mount they make (overlay rootfs, kubelet's volumes, netns files) vanishes with the
#   namespace.
# What is global and so undone by real_down: kubelet's kernel sysctls and the kubepods
# cgroups (cgroup v1 hierarchies are machine-wide).
# Expects RUN, BIN, ROOT, PKI to be set.

REAL=$RUN/real
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
SVC_IP=10.96.0.1
BRIDGE=testenv0
CONTAINERD_SOCK=$REAL/containerd.sock
# Kernel sysctls the kubelet sets (kernel defaults it insists on); saved and restored.
KUBELET_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
REAL_IMAGES=(shortener shortener-operator pause)
# The e2e scenarios and chart-e2e roll out "new versions" as these tags of the one
# shortener image (a version differs by its env, e.g. a fault), as on the simulated node.
SHORTENER_TEST_TAGS=(v1 v2 v3 v4 v5)

# The namespace holder's pid; every component is started inside its namespaces.
ns_pid() { cat "$RUN/pids/netns.pid" 2>/dev/null; }
# in_ns CMD...: runs CMD in the cluster's network and mount namespaces.
in_ns() { nsenter --target "$(ns_pid)" --net --mount -- "$@"; }

real_check_tools() {
  local t
  for t in containerd runc ctr nsenter unshare iptables ip buildah; do
    command -v "$t" >/dev/null || { echo "testenv: real node needs $t (scripts/install-deps.sh installs it)" >&2; return 1; }
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    { echo "testenv: real node needs the CNI plugins in /usr/lib/cni (containernetworking-plugins)" >&2; return 1; }
}

# real_namespaces: the holder process and what lives in its namespaces from the start.
real_namespaces() {
  mkdir -p "$REAL"/{varlib,varlog,cni,containerd}
  chmod 0755 "$REAL"
  # unshare keeps running as `sleep` with the pid recorded; the namespaces live until the
  # last process in them exits (cluster-down kills them all).
  setsid unshare --net --mount --propagation private -- sleep infinity </dev/null >/dev/null 2>&1 9>&- &
  echo $! >"$RUN/pids/netns.pid"
  local deadline=$((SECONDS + 10))
  until [[ $(readlink "/proc/$(ns_pid)/ns/net" 2>/dev/null) != "$(readlink /proc/self/ns/net)" ]]; do
    ((SECONDS < deadline)) || { echo "testenv: namespace holder did not start" >&2; return 1; }
    sleep 0.05
  done
  in_ns bash -euc "
    mount -t tmpfs -o mode=0755 testenv-run /run
    mount --bind '$REAL/varlib' /var/lib
    mount --bind '$REAL/varlog' /var/log
    mkdir -p /var/lib/kubelet /var/log/pods /var/log/containers /run/netns
    # kubelet wants shared mounts (HostToContainer propagation); only this namespace's.
    mount --make-rshared /
    ip link set lo up
    ip link add $BRIDGE type bridge
    ip addr add $NODE_IP/24 dev $BRIDGE
    ip link set $BRIDGE up
    # Local clients reach ClusterIPs (kube-proxy DNATs them in OUTPUT after routing).
    ip route add $SVC_CIDR dev $BRIDGE src $NODE_IP
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  "
}

real_configs() {
  local VERSION=$1
  cat >"$REAL/containerd.toml" <<TOML
version = 2
root = "$REAL/containerd/root"
state = "/run/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/pause:$VERSION"
  # No CAP_SYS_RESOURCE here: without it runc fails to set oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$REAL/cni"
TOML
  # No masquerade: the namespace has no way out to masquerade to.
  cat >"$REAL/cni/10-testenv.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "testenv", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.244.0.10", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
JSON
  # Pods get no DNS (none is served); a resolver nobody answers keeps lookups local.
  echo "nameserver 127.0.0.1" >"$REAL/resolv.conf"
  cat >"$REAL/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
podLogsDir: /var/log/pods
resolvConf: $REAL/resolv.conf
failSwapOn: false
makeIPTablesUtilChains: false
# true is fatal here (the machine's kernel.panic* and overcommit differ from what the kubelet
# wants); it sets them instead, and cluster-down restores them.
protectKernelDefaults: false
address: 0.0.0.0
port: 16250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 16248
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
serializeImagePulls: false
# Images come from .images/ and cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
YAML
  cat >"$REAL/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $PKI/kube-proxy.kubeconfig}
hostnameOverride: testenv
bindAddress: 0.0.0.0
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:16256
metricsBindAddress: 127.0.0.1:16249
# 0: leave the machine-wide conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

# real_save_sysctls: before the kubelet changes them (only if not saved by a run that
# did not get to restore them).
real_save_sysctls() {
  [[ -f $RUN/sysctl.saved ]] && return 0
  local k
  for k in "${KUBELET_SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$RUN/sysctl.saved.tmp"
  mv "$RUN/sysctl.saved.tmp" "$RUN/sysctl.saved"
}

# real_import_images VERSION: .images/*.tar into containerd, plus the test tags.
real_import_images() {
  local VERSION=$1 name ctr=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
  for name in "${REAL_IMAGES[@]}"; do
    "${ctr[@]}" images import "$ROOT/.images/$name.tar" >/dev/null
  done
  for tag in "${SHORTENER_TEST_TAGS[@]}"; do
    "${ctr[@]}" images tag --force "docker.io/library/shortener:$VERSION" "docker.io/library/shortener:$tag" >/dev/null
  done
}

# real_down: after the components' pid files were handled by testenv-down.sh. Kills
# whatever still runs in the namespaces (containerd shims) or in the kubepods cgroups
# (containers), then the holder, so the namespaces and all their mounts, links and
# iptables rules go; removes the cgroups; restores the sysctls. Idempotent.
real_down() {
  local holder mntns pid f
  holder=$(ns_pid)
  # Containers first (their cgroups list them), so shims see them exit.
  for f in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods; do
    [[ -d $f ]] || continue
    find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  done
  # The components and containerd's shims share the holder's mount namespace; clients
  # (scripts/testenv-exec.sh, which may be running this very script) enter only its
  # network namespace and are left alone.
  if [[ -n $holder ]] && mntns=$(readlink "/proc/$holder/ns/mnt" 2>/dev/null); then
    for pid in /proc/[0-9]*; do
      pid=${pid#/proc/}
      [[ $pid == "$holder" ]] && continue
      [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$mntns" ]] && kill -KILL "$pid" 2>/dev/null
    done
    kill -KILL "$holder" 2>/dev/null
    local deadline=$((SECONDS + 10))
    while kill -0 "$holder" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  rm -f "$RUN/pids/netns.pid"
  # cgroup v1 hierarchies are machine-wide: remove kubepods depth-first in each (a cgroup
  # whose last process just died may take a moment to be removable).
  local deadline=$((SECONDS + 10)) left
  while :; do
    left=0
    for f in /sys/fs/cgroup/*/kubepods; do
      [[ -d $f ]] || continue
      find "$f" -depth -type d -exec rmdir {} \; 2>/dev/null
      [[ -d $f ]] && left=1
    done
    ((left == 0 || SECONDS >= deadline)) && break
    sleep 0.2
  done
  ((left == 0)) || echo "testenv: some kubepods cgroups could not be removed: $(ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null)" >&2
  if [[ -f $RUN/sysctl.saved ]]; then
    local kv
    while IFS= read -r kv; do sysctl -qw "$kv" || echo "testenv: could not restore $kv" >&2; done <"$RUN/sysctl.saved"
    rm -f "$RUN/sysctl.saved"
  fi
  # The containerd root holds overlay snapshots that were mounted only inside the
  # namespace, so they are plain directories now.
  rm -rf "$REAL"
}
