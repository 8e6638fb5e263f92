#!/bin/sh
# Builds apt repositories of Kubernetes STAND-IN packages (tests only) in OUTDIR, laid out as
# pkgs.k8s.io's: one repository per minor version, OUTDIR/v1.31/deb/ (flat, with Packages):
#
#   tests/standins/build-debs.sh /srv/lab/shared/k8s-repo 1.31.2-1.1 1.30.6-1.1
#   # on a host:  deb [trusted=yes] file:/srv/lab/shared/k8s-repo/v1.31/deb/ /
#
# The packages have the names, versions and file layout of pkgs.k8s.io's (kubelet with its systemd
# unit, kubeadm with the kubelet drop-in 10-kubeadm.conf, kubectl), but the programs in them are
# the stand-ins of this directory, NOT Kubernetes; each reports the package's version (`kubelet
# --version`, `kubeadm version`), as the real binaries do. The kubelet package also carries the
# kube-apiserver, kube-controller-manager and kube-scheduler stand-ins under
# /usr/lib/kubelet-standin/images: what the real kubelet would pull as images for static pods.
# VERSIONs default to 1.31.2-1.1.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [VERSION...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
out=$1
shift
[ $# -gt 0 ] || set -- 1.31.2-1.1
for version in "$@"; do
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kube=v${version%-*}
minor=$(echo "$kube" | cut -d. -f1-2)
repo=$out/$minor/deb
mkdir -p "$repo"

control() { # name depends description
    mkdir -p "$work/$1/DEBIAN"
    {
        printf 'Package: %s\nVersion: %s\nArchitecture: all\n' "$1" "$version"
        printf 'Maintainer: playbook tests <tests@example.invalid>\n'
        [ -z "$2" ] || printf 'Depends: %s\n' "$2"
        printf 'Description: STAND-IN for %s (tests only; not Kubernetes)\n' "$3"
    } >"$work/$1/DEBIAN/control"
}
put() { # package source destination mode: the stand-in, with the package's version built in
    mkdir -p "$work/$1$(dirname "$3")"
    sed "s/\"v1\.31\.2\")\$/\"$kube\")/" "$2" >"$work/$1$3"
    chmod "$4" "$work/$1$3"
}

control kubelet "" "the Kubernetes node agent"
put kubelet "$here/kubelet" /usr/bin/kubelet 0755
for image in kube-apiserver kube-controller-manager kube-scheduler kube-vip; do
    put kubelet "$here/$image" "/usr/lib/kubelet-standin/images/$image" 0755
done
mkdir -p "$work/kubelet/lib/systemd/system"
# pkgs.k8s.io's kubelet.service
cp "$here/kubelet.service" "$work/kubelet/lib/systemd/system/kubelet.service"

control kubeadm "kubelet (>= 1.30.0), kubectl (>= 1.30.0)" "kubeadm"
put kubeadm "$here/kubeadm" /usr/bin/kubeadm 0755
mkdir -p "$work/kubeadm/lib/systemd/system/kubelet.service.d"
# pkgs.k8s.io's drop-in: the kubelet reads what kubeadm init/join wrote
cp "$here/10-kubeadm.conf" "$work/kubeadm/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"

control kubectl "" "kubectl"
put kubectl "$here/kubectl" /usr/bin/kubectl 0755

rm -f "$repo"/*.deb
for p in kubelet kubeadm kubectl; do
    dpkg-deb --root-owner-group --build "$work/$p" "$repo/${p}_${version}_all.deb" >/dev/null
done
(cd "$repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages)
rm -rf "$work"
echo "stand-in packages in $repo: kubelet kubeadm kubectl $version"
done
