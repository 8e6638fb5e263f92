#!/bin/sh
# Installs the Kubernetes STAND-INS (tests only: kubeadm, kubelet, kube-apiserver, kubectl) into
# /usr/local/bin of a lab host, through `lab.sh exec` (no ssh needed):
#
#   tests/standins/install.sh h3
#
# The lab hosts share the machine's /usr, so python3 (with PyYAML) and openssl are already there;
# /usr/local/bin lies in the host's own overlay, so the stand-ins appear on that host only.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 LAB-HOST (e.g. h3)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
lab="$here/../lab/lab.sh"
host=$1
# The files travel on stdin: the host's /tmp is its own, so a checkout under /tmp is not visible
# inside it.
tar -C "$here" -chf - kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl | bash "$lab" exec "$host" sh -c '
    set -e
    command -v python3 >/dev/null || { echo "python3 missing on the host" >&2; exit 1; }
    python3 -c "import yaml" || { echo "python3 PyYAML missing (apt-get install python3-yaml)" >&2; exit 1; }
    command -v openssl >/dev/null || { echo "openssl missing on the host" >&2; exit 1; }
    mkdir -p /usr/local/bin
    tar -C /usr/local/bin --no-same-owner -xf -
    chmod 0755 /usr/local/bin/kubeadm /usr/local/bin/kubelet /usr/local/bin/kube-apiserver /usr/local/bin/kube-controller-manager /usr/local/bin/kube-scheduler /usr/local/bin/kubectl
'
echo "stand-ins installed on $host: kubeadm kubelet kube-apiserver kubectl (/usr/local/bin)"
