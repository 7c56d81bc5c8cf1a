#!/usr/bin/env bash
# `make cluster` / `make cluster-down`: a real single-node Kubernetes on this host, no kind.
#
#   bash deploy/cluster.sh up            # start (or recover) it; a running one is left as is
#   bash deploy/cluster.sh down          # stop it and remove every trace, then check that
#   bash deploy/cluster.sh status        # what runs, where its logs are
#   bash deploy/cluster.sh import IMG... # docker images (or docker-save tars) into the node
#   bash deploy/cluster.sh check-clean   # compare the host with the snapshot taken before up
#
# What runs (host processes, each with a PID file and a log under $STATE/logs):
#   containerd (Debian's, its own root/state/socket — Docker's is untouched), etcd (Debian's,
#   127.0.0.1:12379, fresh data per cluster), kube-apiserver (10.244.0.1:6443),
#   kube-controller-manager, kube-scheduler, kubelet (node cloudmart-local), kube-proxy
#   (iptables mode), kube-router (its NetworkPolicy firewall only: iptables + ipset; no
#   routing, no service proxy); as pods: CoreDNS (10.96.0.10) and metrics-server.
#   Kubernetes v1.34.4, CoreDNS, metrics-server and kube-router are built once from the Go
#   module proxy (deploy/cluster/build.sh) and cached under $CLOUDMART_CACHE/cluster; the
#   pause image is built from pause.c.
#
# Network (the facts are in ../shared/design/LOCAL-CLUSTER.md):
#   bridge cni0 = 10.244.0.1/24 (node IP, apiserver address), pods in 10.244.0.0/24 with a
#   route to the service range 10.96.0.0/16 only (no default route); CoreDNS answers for
#   cluster.local and NXDOMAIN for everything else (no upstream); mangle-table guards drop
#   anything from the pod range that would leave by another interface and anything to the
#   pod/service ranges leaving by the uplink. Nothing leaves the machine.
#
# The kubeconfig context `cloudmart-local` is merged into $KUBECONFIG (its first file) or
# ~/.kube/config and made current, as kind does; `down` removes it again.
#
# Needs root, cgroups, Go (first build), openssl, python3 and Debian's containerd, runc,
# etcd-server, containernetworking-plugins, iptables, ipset (apt-get install ...).
# Settings: CLOUDMART_CACHE (~/.cache/cloudmart), CLUSTER_HPA_SYNC (15s, the
# controller-manager's --horizontal-pod-autoscaler-sync-period).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/deploy/cluster
CACHE=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
export CLOUDMART_CACHE=$CACHE
BASE=$CACHE/cluster
STATE=$BASE/state
BEFORE=$BASE/before
RUN=/run/cloudmart-cluster
SOCK=$RUN/containerd/containerd.sock
KUBE_VERSION=$(sed -n "s/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p" "$HERE/kube/go.mod" | head -1)
BIN=$BASE/bin-$KUBE_VERSION
NODE=cloudmart-local
CONTEXT=cloudmart-local
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
API_SVC_IP=10.96.0.1
DNS_IP=10.96.0.10
API_PORT=6443
ETCD_PORT=12379
PAUSE_IMAGE=cloudmart.local/pause:$KUBE_VERSION
DNS_IMAGE=cloudmart.local/coredns:v1.14.7
METRICS_IMAGE=cloudmart.local/metrics-server:v0.8.0
ADMIN_CONF=$STATE/kubeconfig/admin.conf
GUARD=CLOUDMART-GUARD
# Kernel settings the kubelet, kube-proxy or this script change; restored by `down`.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max net.ipv4.conf.all.route_localnet)
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router)

say() { printf '\033[1mcluster:\033[0m %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf '\033[31mcluster: %s\033[0m\n' "$*" >&2; exit 1; }

# --- processes ------------------------------------------------------------------------------
pidfile() { echo "$STATE/run/$1.pid"; }
running_pid() { # component -> pid on stdout when it runs
  local f pid
  f=$(pidfile "$1")
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}
start_proc() { # component cmd... : started in its own session, logs to $STATE/logs/<component>.log
  local name=$1 pid
  shift
  if pid=$(running_pid "$name"); then info "$name already running (pid $pid)"; return; fi
  mkdir -p "$STATE/run" "$STATE/logs"
  printf '+ %s\n' "$*" >>"$STATE/logs/commands.log"
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  info "$name started (pid $!, log $STATE/logs/$name.log)"
}
stop_proc() { # component [seconds]
  local name=$1 wait=${2:-20} pid i
  if ! pid=$(running_pid "$name"); then rm -f "$(pidfile "$name")"; return; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < wait * 4; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$(pidfile "$name")"
  info "$name stopped (pid $pid)"
}
wait_for() { # description seconds command...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what did not come up within ${secs}s (logs: $STATE/logs)"
}

kc() { "$KUBECTL" --kubeconfig "$ADMIN_CONF" "$@"; }
# stdin -> FILE, replaced atomically and only when the content differs: kube-proxy watches
# its configuration file and exits when it changes (a rewrite in place is a change).
write_file() {
  local f=$1 tmp
  mkdir -p "$(dirname "$f")"
  tmp=$(mktemp "$f.XXXXXX")
  cat >"$tmp"
  if [[ -f "$f" ]] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; else mv "$tmp" "$f"; fi
}

# --- preflight ------------------------------------------------------------------------------
preflight() {
  [[ "$(uname -s)" == Linux ]] || die "make cluster runs Kubernetes on a Linux host; elsewhere use kind: make deploy CLUSTER=kind"
  [[ "$(id -u)" == 0 ]] || die "make cluster needs root (it runs the kubelet, containerd and sets up a bridge and iptables rules); run it as root or with sudo, or use kind (make deploy CLUSTER=kind)"
  [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] \
    || die "no cgroups mounted at /sys/fs/cgroup (the kubelet needs the memory and cpu controllers)"
  local missing=() c
  for c in containerd ctr runc etcd iptables iptables-save ipset openssl ip python3 gcc; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=("/usr/lib/cni/{bridge,host-local,loopback}")
  ((${#missing[@]} == 0)) || die "missing: ${missing[*]}
    Debian/Ubuntu: apt-get install containerd runc etcd-server containernetworking-plugins iptables ipset openssl iproute2 python3 gcc libc6-dev"
  [[ -d /proc/sys/net/bridge ]] || die "br_netfilter is not loaded (/proc/sys/net/bridge missing): modprobe br_netfilter"
  if [[ ! -x "$BIN/kubelet" || ! -x "$BIN/coredns" || ! -x "$BIN/metrics-server" || ! -x "$BIN/kube-router" || ! -x "$BIN/pause" ]]; then
    command -v go >/dev/null || die "go not found: Go 1.24+ builds the Kubernetes binaries the first time (https://go.dev/dl)"
  fi
}

# --- snapshot of the host before the cluster, and the check after `down` ---------------------
uplinks() { ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i+1)}' | sort -u; }
host_view() { # dir: what `down` must restore
  local d=$1 s
  mkdir -p "$d"
  for s in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo absent)"; done >"$d/sysctl"
  # veths come and go with Docker's containers too; the pods' ones are checked by name
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -v '^veth' | sort >"$d/links"
  { for t in filter nat mangle raw; do iptables-save -t "$t" 2>/dev/null | grep -E '^-A|^:' | sed 's/ \[[0-9:]*\]$//' \
      | grep -E 'KUBE|CNI-|CLOUDMART|cni0|10\.244\.|10\.96\.' | sed "s/^/$t /"; done; } | sort >"$d/iptables" || true
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($STATE|$RUN)|^/run/netns/cni-|^/var/run/netns/cni-" | sort >"$d/mounts" || true
  find /run/netns -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort >"$d/netns" || true
  find /sys/fs/cgroup -maxdepth 2 -name kubepods -type d 2>/dev/null | sort >"$d/cgroups" || true
  # kube-router's sets (kube-router-*, KUBE-SRC-*, KUBE-DST-*)
  { ipset list -n 2>/dev/null || true; } | sort >"$d/ipsets"
}
take_snapshot() {
  if [[ -d "$BEFORE" ]]; then return; fi
  host_view "$BEFORE.tmp"
  mv "$BEFORE.tmp" "$BEFORE"
  info "host state before the cluster saved in $BEFORE (down restores it and checks)"
}
check_clean() {
  [[ -d "$BEFORE" ]] || { say "no snapshot in $BEFORE: nothing to compare"; return 0; }
  local now bad=0 f c pid
  now=$(mktemp -d)
  host_view "$now"
  for f in sysctl links iptables mounts netns cgroups ipsets; do
    [[ -f "$BEFORE/$f" ]] || : >"$BEFORE/$f"
    if ! diff -u "$BEFORE/$f" "$now/$f" >"$now/$f.diff"; then
      bad=1
      say "left behind ($f, - before / + now):"
      sed -n '3,$p' "$now/$f.diff" | grep -E '^[-+]' >&2 || true
    fi
  done
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then bad=1; say "left behind: $c still runs (pid $pid)"; fi
  done
  if [[ -f "$BASE/pod-links" ]]; then
    while IFS= read -r c; do
      if ip link show "$c" >/dev/null 2>&1; then bad=1; say "left behind: pod interface $c"; fi
    done <"$BASE/pod-links"
  fi
  for f in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' <"$f" 2>/dev/null | grep -qE "$RUN|$STATE"; then
      pid=${f#/proc/}; pid=${pid%/cmdline}
      bad=1; say "left behind: process $pid: $(tr '\0' ' ' <"$f" | cut -c1-120)"
    fi
  done
  rm -rf "$now"
  if ((bad)); then die "check-clean: the host differs from before the cluster (see above)"; fi
  say "check-clean: no process, mount, interface, iptables rule, ipset or cgroup of the cluster left; kernel settings as before"
}

# --- network --------------------------------------------------------------------------------
network_up() {
  if ! ip link show cni0 >/dev/null 2>&1; then
    ip link add cni0 type bridge
  fi
  ip addr show dev cni0 | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev cni0
  ip link set cni0 up
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # Guards: pods reach only the cluster; nothing of the cluster leaves by the uplink.
  iptables -t mangle -N "$GUARD" 2>/dev/null || iptables -t mangle -F "$GUARD"
  iptables -t mangle -A "$GUARD" -s "$POD_CIDR" ! -o cni0 -j DROP
  local up
  for up in $(uplinks); do
    iptables -t mangle -A "$GUARD" -o "$up" -d "$POD_CIDR" -j DROP
    iptables -t mangle -A "$GUARD" -o "$up" -d "$SVC_CIDR" -j DROP
    iptables -t mangle -A "$GUARD" -o "$up" -s "$POD_CIDR" -j DROP
  done
  iptables -t mangle -C FORWARD -j "$GUARD" 2>/dev/null || iptables -t mangle -I FORWARD -j "$GUARD"
  for up in $(uplinks); do
    iptables -t mangle -C POSTROUTING -o "$up" -j "$GUARD" 2>/dev/null || iptables -t mangle -I POSTROUTING -o "$up" -j "$GUARD"
  done
  # dockerd sets FORWARD's policy to DROP, which drops pod -> ClusterIP -> pod.
  iptables -C FORWARD -i cni0 -o cni0 -j ACCEPT 2>/dev/null || iptables -I FORWARD -i cni0 -o cni0 -j ACCEPT
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  write_file "$STATE/cni/net.d/10-cloudmart.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "cloudmart",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SVC_CIDR"}]
      }
    }
  ]
}
EOF
}

# --- certificates and kubeconfigs -------------------------------------------------------------
pki=""
cert() { # name CN O [SANs]: key + cert signed by the cluster CA
  local name=$1 cn=$2 org=$3 sans=${4:-} subj
  [[ -f "$pki/$name.crt" ]] && return
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$name.key" \
    -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$sans" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/${5:-ca}.crt" -CAkey "$pki/${5:-ca}.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}
ca() { # name CN
  [[ -f "$pki/$1.crt" ]] && return
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$1.key" \
    -subj "/CN=$2" -days 3650 -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$pki/$1.crt" 2>/dev/null
}
kubeconfig() { # file user-cert-name
  local f=$STATE/kubeconfig/$1.conf
  [[ -f "$f" ]] && return
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: $CONTEXT
    cluster:
      server: https://$NODE_IP:$API_PORT
      certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
  - name: $1
    user:
      client-certificate-data: $(base64 -w0 <"$pki/$2.crt")
      client-key-data: $(base64 -w0 <"$pki/$2.key")
contexts:
  - name: $CONTEXT
    context: {cluster: $CONTEXT, user: $1}
current-context: $CONTEXT
EOF
  chmod 600 "$f"
}
certificates() {
  pki=$STATE/pki
  mkdir -p "$pki" "$STATE/kubeconfig"
  chmod 700 "$pki"
  ca ca cloudmart-local-ca
  ca front-proxy-ca cloudmart-local-front-proxy-ca
  cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:$API_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert front-proxy-client front-proxy-client "" "" front-proxy-ca
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kubelet-client "system:node:$NODE" system:nodes
  cert kubelet-serving "system:node:$NODE" system:nodes "IP:$NODE_IP,DNS:$NODE"
  cert kube-proxy system:kube-proxy ""
  cert kube-router system:kube-router ""
  [[ -f "$pki/sa.key" ]] || { openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null; openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null; }
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kubelet kubelet-client
  kubeconfig kube-proxy kube-proxy
  kubeconfig kube-router kube-router
}

# --- images ---------------------------------------------------------------------------------
ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }
have_image() { ctr_ images ls -q 2>/dev/null | grep -qx "$1"; }
cluster_images() {
  local tmp
  tmp=$(mktemp -d)
  if ! have_image "$PAUSE_IMAGE"; then
    python3 "$HERE/mkimage.py" "$tmp/pause.tar" "$PAUSE_IMAGE" --file "$BIN/pause=/pause" --entrypoint /pause --user 65535:65535
    ctr_ images import --no-unpack=false "$tmp/pause.tar" >/dev/null
  fi
  if ! have_image "$DNS_IMAGE"; then
    python3 "$HERE/mkimage.py" "$tmp/coredns.tar" "$DNS_IMAGE" --file "$BIN/coredns=/coredns" --entrypoint /coredns
    ctr_ images import "$tmp/coredns.tar" >/dev/null
  fi
  if ! have_image "$METRICS_IMAGE"; then
    python3 "$HERE/mkimage.py" "$tmp/ms.tar" "$METRICS_IMAGE" --file "$BIN/metrics-server=/metrics-server" --entrypoint /metrics-server --user 1000
    ctr_ images import "$tmp/ms.tar" >/dev/null
  fi
  rm -rf "$tmp"
  info "node images: $PAUSE_IMAGE (pause.c), $DNS_IMAGE, $METRICS_IMAGE"
}
import_images() { # docker image refs or .tar files -> the node's containerd (k8s.io namespace)
  running_pid containerd >/dev/null || die "the cluster's containerd is not running: make cluster"
  local img docker=${DOCKER:-docker}
  for img in "$@"; do
    if [[ -f "$img" ]]; then
      info "import $img"
      ctr_ images import "$img" >/dev/null
    else
      local id mark
      id=$("$docker" image inspect -f '{{.Id}}' "$img" 2>/dev/null) || die "image $img not found in Docker (make images / deploy/airgap-infra.sh build it)"
      mark=$STATE/images/$(printf '%s' "$img" | tr '/:' '__')
      if [[ -f "$mark" && "$(<"$mark")" == "$id" ]] && have_image "docker.io/$img"; then
        info "$img unchanged in the node"
        continue
      fi
      info "import $img ($(("$("$docker" image inspect -f '{{.Size}}' "$img")" / 1048576)) MiB)"
      "$docker" save "$img" | ctr_ images import - >/dev/null
      mkdir -p "$STATE/images"
      echo "$id" >"$mark"
    fi
  done
}

# --- components -----------------------------------------------------------------------------
start_containerd() {
  mkdir -p "$STATE/containerd" "$RUN/containerd"
  write_file "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj is refused, so keep it
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
  start_proc containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd 30 ctr --address "$SOCK" version
}
start_control_plane() {
  mkdir -p "$STATE/etcd"
  start_proc etcd etcd --name cloudmart-local --data-dir "$STATE/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "cloudmart-local=http://127.0.0.1:$((ETCD_PORT + 1))" --quota-backend-bytes 2147483648
  start_proc kube-apiserver "$BIN/kube-apiserver" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --service-cluster-ip-range="$SVC_CIDR" --service-node-port-range=30000-32767 \
    --client-ca-file="$pki/ca.crt" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=false \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --enable-aggregator-routing=true --profiling=false
  wait_for kube-apiserver 90 kc get --raw /readyz
  start_proc kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig/controller-manager.conf" \
    --authentication-kubeconfig="$STATE/kubeconfig/controller-manager.conf" \
    --authorization-kubeconfig="$STATE/kubeconfig/controller-manager.conf" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SVC_CIDR" --allocate-node-cidrs=false \
    --controllers='*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --horizontal-pod-autoscaler-sync-period="${CLUSTER_HPA_SYNC:-15s}" --profiling=false
  start_proc kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/kubeconfig/scheduler.conf" \
    --authentication-kubeconfig="$STATE/kubeconfig/scheduler.conf" \
    --authorization-kubeconfig="$STATE/kubeconfig/scheduler.conf" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}
start_node() {
  mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
  write_file "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
oomScoreAdj: 0
kernelMemcgNotification: false
makeIPTablesUtilChains: false
# pods never see the host's resolver: cluster DNS only
resolvConf: ""
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
# with false the node gets no ephemeral-storage capacity and /stats/summary fails, so
# metrics-server (and the HPA) would see nothing
localStorageCapacityIsolation: true
podLogsDir: $STATE/pod-logs
serializeImagePulls: false
# absolute floors: 5% of a large, well-filled disk (caches, images) would taint the node
# with disk-pressure while gigabytes are free (seen: 7 GiB free of 252 GiB)
evictionHard: {memory.available: 200Mi, nodefs.available: 2Gi, imagefs.available: 2Gi}
evictionPressureTransitionPeriod: 30s
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
EOF
  start_proc kubelet "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
    --kubeconfig="$STATE/kubeconfig/kubelet.conf" --root-dir="$STATE/kubelet" \
    --hostname-override="$NODE" --node-ip="$NODE_IP" --cert-dir="$STATE/kubelet/pki"
  mkdir -p "$STATE/kube-proxy"
  write_file "$STATE/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kubeconfig/kube-proxy.conf}
mode: iptables
hostnameOverride: $NODE
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_proc kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy/config.yaml"
}
# NetworkPolicies: kube-proxy and the bridge CNI do not enforce them; kube-router's firewall
# does (iptables chains per pod and policy, ipsets of the selected pods). It runs after the
# add-ons, which hold its RBAC (user system:kube-router).
start_policy_firewall() {
  running_pid kube-router >/dev/null && return
  start_proc kube-router "$BIN/kube-router" --kubeconfig="$STATE/kubeconfig/kube-router.conf" \
    --hostname-override="$NODE" --run-firewall=true --run-router=false --run-service-proxy=false \
    --run-loadbalancer=false --enable-cni=false --enable-ipv6=false \
    --service-cluster-ip-range="$SVC_CIDR" --health-port=0 --metrics-port=0 --v=1
  wait_for "kube-router's NetworkPolicy chains" 60 iptables -S KUBE-ROUTER-FORWARD
  info "NetworkPolicies enforced by kube-router (log $STATE/logs/kube-router.log)"
}
node_ready() { kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
addons() {
  sed -e "s|@DNS_IMAGE@|$DNS_IMAGE|" -e "s|@METRICS_IMAGE@|$METRICS_IMAGE|" -e "s|@DNS_IP@|$DNS_IP|" "$HERE/addons.yaml" \
    | kc apply -f - >/dev/null
  kc -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null || die "CoreDNS did not become ready (kubectl -n kube-system describe pod -l k8s-app=kube-dns)"
  kc -n kube-system rollout status deployment/metrics-server --timeout=120s >/dev/null || die "metrics-server did not become ready (kubectl -n kube-system logs deploy/metrics-server)"
  info "CoreDNS ($DNS_IP) and metrics-server Ready"
}

user_kubeconfig() { local k=${KUBECONFIG:-$HOME/.kube/config}; echo "${k%%:*}"; }
merge_context() {
  local target
  target=$(user_kubeconfig)
  mkdir -p "$(dirname "$target")"
  local k=("$KUBECTL" --kubeconfig "$target" config)
  "${k[@]}" set-cluster "$CONTEXT" --server="https://$NODE_IP:$API_PORT" --certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" set-credentials "$CONTEXT" --client-certificate="$pki/admin.crt" --client-key="$pki/admin.key" --embed-certs=true >/dev/null
  "${k[@]}" set-context "$CONTEXT" --cluster="$CONTEXT" --user="$CONTEXT" >/dev/null
  "${k[@]}" use-context "$CONTEXT" >/dev/null
  chmod 600 "$target"
  info "kube context $CONTEXT merged into $target and made current"
}
unmerge_context() {
  local target
  target=$(user_kubeconfig)
  [[ -f "$target" ]] || return 0
  local k=("$KUBECTL" --kubeconfig "$target" config)
  if [[ "$("${k[@]}" current-context 2>/dev/null || true)" == "$CONTEXT" ]]; then "${k[@]}" unset current-context >/dev/null; fi
  "${k[@]}" delete-context "$CONTEXT" >/dev/null 2>&1 || true
  "${k[@]}" delete-cluster "$CONTEXT" >/dev/null 2>&1 || true
  "${k[@]}" delete-user "$CONTEXT" >/dev/null 2>&1 || true
  info "kube context $CONTEXT removed from $target"
}

tools() {
  export TOOLS=${CACHE}/k8s-tools
  # shellcheck source=deploy/k8s-tools.sh
  . "$ROOT/deploy/k8s-tools.sh"
  KUBECTL=$(pick_tool kubectl "${KUBECTL:-}")
}
log() { info "$*"; }

up() {
  local t0=$SECONDS
  preflight
  say "Kubernetes $KUBE_VERSION on this host: node $NODE ($NODE_IP), context $CONTEXT, state $STATE"
  if [[ ! -d "$STATE" ]] || ! running_pid etcd >/dev/null; then
    # no cluster (or a crashed one without etcd): the snapshot is taken before anything starts
    if ! running_pid kube-apiserver >/dev/null && ! running_pid kubelet >/dev/null && ! running_pid containerd >/dev/null; then
      [[ -d "$STATE" ]] && [[ ! -d "$BEFORE" ]] && say "state from an earlier cluster without a snapshot: 'down' first if anything of it is left"
      take_snapshot
    fi
  fi
  BIN=$(bash "$HERE/build.sh")
  tools
  network_up
  certificates
  start_containerd
  cluster_images
  start_control_plane
  start_node
  wait_for "node $NODE Ready" 120 node_ready
  info "node $NODE Ready"
  addons
  start_policy_firewall
  merge_context
  say "cluster up in $((SECONDS - t0)) s — kubectl --context $CONTEXT get nodes; logs: $STATE/logs; stop: make cluster-down"
}

# Pods go first (through the kubelet, so each sandbox's network and mounts are torn down),
# then the processes by PID, then whatever a crash may have left.
down() {
  say "stopping the cluster (state $STATE)"
  tools
  # the pods' host-side interfaces, to check afterwards that they went with their sandboxes
  ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' >"$BASE/pod-links" || true
  if running_pid kube-apiserver >/dev/null && running_pid kubelet >/dev/null && [[ -f "$ADMIN_CONF" ]]; then
    stop_proc kube-controller-manager
    stop_proc kube-scheduler
    info "deleting every pod (the kubelet tears their sandboxes down)"
    kc delete pods --all --all-namespaces --grace-period=5 --wait=true --timeout=90s >/dev/null 2>&1 || info "some pods did not go within 90 s; continuing"
    local i
    for ((i = 0; i < 60; i++)); do
      [[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]] && break
      sleep 1
    done
  fi
  stop_proc kube-router
  stop_proc kube-proxy
  stop_proc kubelet
  stop_proc kube-scheduler
  stop_proc kube-controller-manager
  stop_proc kube-apiserver
  stop_proc etcd
  # what the kubelet did not stop: every process in the kubepods cgroups and the shims of
  # this containerd (found by its socket), by PID
  local pids pid f
  pids=$(find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
  for f in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' <"$f" 2>/dev/null | grep -q -- "containerd-shim.*$RUN/containerd"; then
      pid=${f#/proc/}; pids+=" ${pid%/cmdline}"
    fi
  done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  stop_proc containerd
  if [[ -x "$BIN/kube-proxy" ]]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  # mounts under the state dirs, deepest first; network namespaces of the pods
  local m
  # (grep finds nothing when the kubelet unmounted everything: not an error)
  awk '{print $5}' /proc/self/mountinfo | { grep -E "^($STATE|$RUN)" || true; } | sort -r | while IFS= read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  for m in /run/netns/cni-*; do
    [[ -e "$m" ]] || continue
    m=${m#/run/netns/}
    if [[ -f "$BEFORE/netns" ]] && grep -qx "$m" "$BEFORE/netns"; then continue; fi
    ip netns delete "$m" 2>/dev/null || umount -l "/run/netns/$m" 2>/dev/null || true
    rm -f "/run/netns/$m"
  done
  # cgroups of the pods
  find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} \; 2>/dev/null || true
  # iptables: the guards, the FORWARD accept, and chains the kubelet/kube-proxy left
  iptables -D FORWARD -i cni0 -o cni0 -j ACCEPT 2>/dev/null || true
  while iptables -t mangle -D FORWARD -j "$GUARD" 2>/dev/null; do :; done
  local up t c
  for up in $(uplinks); do while iptables -t mangle -D POSTROUTING -o "$up" -j "$GUARD" 2>/dev/null; do :; done; done
  iptables -t mangle -F "$GUARD" 2>/dev/null || true
  iptables -t mangle -X "$GUARD" 2>/dev/null || true
  for t in filter nat mangle raw; do
    for c in $(iptables-save -t "$t" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\).*/\1/p'); do
      if [[ -f "$BEFORE/iptables" ]] && grep -q "^$t :$c" "$BEFORE/iptables"; then continue; fi
      # a rule's words as iptables-save quotes them ("--comment "a b""): xargs splits them
      # the way the shell would, without running anything
      iptables-save -t "$t" | { grep -E "^-A [^ ]+ .*-j $c( |$)" || true; } | sed 's/^-A/-D/' | while IFS= read -r rule; do
        printf '%s\n' "$rule" | xargs iptables -t "$t" 2>/dev/null || true
      done
      iptables -t "$t" -F "$c" 2>/dev/null || true
    done
    for c in $(iptables-save -t "$t" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\).*/\1/p'); do
      if [[ -f "$BEFORE/iptables" ]] && grep -q "^$t :$c" "$BEFORE/iptables"; then continue; fi
      iptables -t "$t" -X "$c" 2>/dev/null || true
    done
  done
  # kube-router's ipsets, now that no rule refers to them (its --cleanup-config leaves the
  # FORWARD jump and panics in v2.1.0, so the loop above and this do its cleanup)
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router-)' || true); do
    if [[ -f "$BEFORE/ipsets" ]] && grep -qx "$set" "$BEFORE/ipsets"; then continue; fi
    ipset destroy "$set" 2>/dev/null || info "could not destroy ipset $set"
  done
  ip link show cni0 >/dev/null 2>&1 && ip link delete cni0
  # kernel settings as they were
  if [[ -f "$BEFORE/sysctl" ]]; then
    local kv
    while IFS= read -r kv; do
      [[ "${kv#*=}" == absent ]] && continue
      [[ "$(sysctl -n "${kv%%=*}" 2>/dev/null)" == "${kv#*=}" ]] || sysctl -qw "$kv" 2>/dev/null || info "could not restore $kv"
    done <"$BEFORE/sysctl"
  fi
  unmerge_context
  rm -rf "$RUN"
  # logs survive for a post-mortem; the rest of the state (etcd data, images, certificates) goes
  if [[ -d "$STATE" ]]; then
    rm -rf "$BASE/last-logs"
    [[ -d "$STATE/logs" ]] && mv "$STATE/logs" "$BASE/last-logs"
    rm -rf "$STATE"
    info "state removed; logs of this cluster kept in $BASE/last-logs"
  fi
  check_clean
  rm -rf "$BEFORE" "$BASE/pod-links"
}

status() {
  local c pid
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then printf '  %-24s running  pid %-7s log %s\n' "$c" "$pid" "$STATE/logs/$c.log"
    else printf '  %-24s stopped\n' "$c"; fi
  done
  if running_pid kube-apiserver >/dev/null; then tools; kc get nodes -o wide 2>/dev/null || true; fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  import) shift; import_images "$@" ;;
  check-clean) check_clean ;;
  kubeconfig) echo "$ADMIN_CONF" ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (up, down, status, import IMAGE..., check-clean, kubeconfig)" ;;
esac
