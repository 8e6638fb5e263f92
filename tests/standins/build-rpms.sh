#!/bin/sh
# Builds rpm repositories of STAND-IN packages (tests only) for the Red Hat family path of the
# HA playbooks, in OUTDIR:
#
#   OUTDIR/k8s/v1.31/rpm/   laid out as pkgs.k8s.io's: kubelet, kubeadm, kubectl VERSION
#   OUTDIR/docker/          as Docker's repository: containerd.io
#   OUTDIR/el/              what an EL host's own repositories give: iproute-tc, haproxy,
#                           keepalived, curl
#
#   tests/standins/build-rpms.sh /srv/lab/shared/el-repo 1.31.2-150500.1.1
#
# The Kubernetes packages carry the stand-in programs of this directory (NOT Kubernetes) and
# pkgs.k8s.io's file layout (kubelet.service, the kubeadm drop-in), like build-debs.sh's. The
# others hold only a file naming them: the lab hosts already have the machine's real containerd,
# haproxy, keepalived and curl (Debian's), and these packages make dnf and rpm see them installed.
# containerd.io carries what Docker's package puts in /etc/containerd/config.toml: a config that
# disables the CRI plugin (the playbook must replace it). VERSION defaults to 1.31.2-150500.1.1.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [VERSION...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
out=$1
shift
[ $# -gt 0 ] || set -- 1.31.2-150500.1.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rpmdb" "$work/files"

# rpm NAME VERSION RELEASE REPO REQUIRES INSTALL-SCRIPT FILES...: one noarch package into REPO.
rpm() {
    # (sh has no locals: these names are the function's alone)
    rpm_name=$1 rpm_version=$2 rpm_release=$3 rpm_repo=$4 rpm_requires=$5 rpm_install=$6
    shift 6
    mkdir -p "$rpm_repo"
    {
        printf 'Name: %s\nVersion: %s\nRelease: %s\n' "$rpm_name" "$rpm_version" "$rpm_release"
        printf 'Summary: STAND-IN for %s (tests only)\nLicense: none\nBuildArch: noarch\n' "$rpm_name"
        # The stand-ins are scripts: their interpreters are the machine's, not rpm's to resolve.
        printf 'AutoReqProv: no\n'
        [ -z "$rpm_requires" ] || printf 'Requires: %s\n' "$rpm_requires"
        printf '%%description\nSTAND-IN for %s: tests only, not the real package.\n' "$rpm_name"
        printf '%%install\nmkdir -p %%{buildroot}/usr/share/doc/%s-standin\n' "$rpm_name"
        printf 'echo "STAND-IN %s %s" > %%{buildroot}/usr/share/doc/%s-standin/README\n' \
            "$rpm_name" "$rpm_version" "$rpm_name"
        printf '%s\n' "$rpm_install"
        printf '%%files\n/usr/share/doc/%s-standin/README\n' "$rpm_name"
        for path in "$@"; do printf '%s\n' "$path"; done
    } >"$work/$rpm_name.spec"
    rpmbuild -bb --quiet --define "_topdir $work/build" --define "_dbpath $work/rpmdb" \
        --define '_build_id_links none' "$work/$rpm_name.spec" >/dev/null
    cp "$work/build/RPMS/noarch/$rpm_name-$rpm_version-$rpm_release.noarch.rpm" "$rpm_repo/"
}

for version in "$@"; do
    kube=v${version%-*}
    minor=$(echo "$kube" | cut -d. -f1-2)
    repo=$out/k8s/$minor/rpm
    rm -rf "$repo"
    for p in kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-vip; do
        sed "s/\"v1\.31\.2\")\$/\"$kube\")/" "$here/$p" >"$work/files/$p"
    done
    # pkgs.k8s.io's kubelet.service and kubeadm's drop-in; an rpm's drop-in reads
    # /etc/sysconfig/kubelet where a deb's reads /etc/default/kubelet.
    cp "$here/kubelet.service" "$work/files/kubelet.service"
    sed 's|/etc/default/kubelet|/etc/sysconfig/kubelet|' "$here/10-kubeadm.conf" >"$work/files/10-kubeadm.conf"
    f=$work/files
    images=/usr/lib/kubelet-standin/images
    rpm kubelet "${version%-*}" "${version#*-}" "$repo" "" "
mkdir -p %{buildroot}/usr/bin %{buildroot}/usr/lib/systemd/system %{buildroot}$images
install -m 0755 $f/kubelet %{buildroot}/usr/bin/kubelet
install -m 0644 $f/kubelet.service %{buildroot}/usr/lib/systemd/system/kubelet.service
for i in kube-apiserver kube-controller-manager kube-scheduler kube-vip; do install -m 0755 $f/\$i %{buildroot}$images/\$i; done" \
        /usr/bin/kubelet /usr/lib/systemd/system/kubelet.service "$images"
    rpm kubeadm "${version%-*}" "${version#*-}" "$repo" "kubelet, kubectl" "
mkdir -p %{buildroot}/usr/bin %{buildroot}/usr/lib/systemd/system/kubelet.service.d
install -m 0755 $f/kubeadm %{buildroot}/usr/bin/kubeadm
install -m 0644 $f/10-kubeadm.conf %{buildroot}/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf" \
        /usr/bin/kubeadm /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf
    rpm kubectl "${version%-*}" "${version#*-}" "$repo" "" "
mkdir -p %{buildroot}/usr/bin
install -m 0755 $f/kubectl %{buildroot}/usr/bin/kubectl" /usr/bin/kubectl
    createrepo_c --quiet "$repo"
    echo "stand-in packages in $repo: kubelet kubeadm kubectl $version"
done

rm -rf "$out/docker" "$out/el"
# Docker's containerd.io: its config.toml turns the CRI plugin off (Docker needs no CRI).
printf '%s\n' '#   Copyright 2018-2022 Docker Inc.' '' 'disabled_plugins = ["cri"]' >"$work/files/config.toml"
rpm containerd.io 1.7.22 3.1.el9 "$out/docker" "" "
mkdir -p %{buildroot}/etc/containerd
install -m 0644 $work/files/config.toml %{buildroot}/etc/containerd/config.toml" \
    '%config(noreplace) /etc/containerd/config.toml'
createrepo_c --quiet "$out/docker"
for p in iproute-tc haproxy keepalived curl; do
    rpm "$p" 1.0 1.el9 "$out/el" "" ""
done
createrepo_c --quiet "$out/el"
echo "stand-in packages in $out/docker: containerd.io; in $out/el: iproute-tc haproxy keepalived curl"
