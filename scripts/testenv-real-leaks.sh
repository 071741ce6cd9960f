#!/usr/bin/env bash
# What a real-node cluster could leave behind on the machine, as text, so a snapshot taken
# before `TESTENV_NODE=real make cluster-up` can be compared with one after `make
# cluster-down` (make test-real does): processes of the node's binaries, mounts, cgroups,
# network links, named network namespaces, the host's iptables rules, and the sysctls the
# kubelet and the bridge plugin change.
#   scripts/testenv-real-leaks.sh snapshot FILE
#   scripts/testenv-real-leaks.sh compare FILE     # exit 1, with a diff, if anything differs
set -uo pipefail
snapshot() {
  echo "## processes"
  for exe in /proc/[0-9]*/exe; do readlink "$exe" 2>/dev/null; done |
    grep -E '/(containerd|containerd-shim[^/]*|runc|kubelet|kube-proxy|pause)$' | sort | uniq -c
  echo "## mounts"
  awk '{print $5, $9}' /proc/self/mountinfo | sort
  echo "## cgroups"
  ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null
  echo "## links"
  ip -o link show | awk -F': ' '{print $2}' | sort
  echo "## netns"
  ls /run/netns 2>/dev/null
  echo "## iptables"
  iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//'
  echo "## sysctls"
  sysctl kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward \
    net.bridge.bridge-nf-call-iptables 2>/dev/null
  echo "## paths"
  # Those that exist (a fresh machine has none of them: `ls` would fail the snapshot).
  for p in /run/containerd /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /etc/cni/net.d; do
    [[ -e $p ]] && echo "$p"
  done
  return 0
}
case ${1:-} in
snapshot) snapshot >"$2" ;;
compare)
  if diff -u "$2" <(snapshot); then echo "testenv: nothing left behind"; else echo "testenv: the real node left the above behind" >&2; exit 1; fi ;;
*) echo "usage: $0 snapshot|compare FILE" >&2; exit 2 ;;
esac
