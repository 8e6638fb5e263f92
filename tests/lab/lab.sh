#!/usr/bin/env bash
# tests/lab/lab.sh - a multi-host SSH test lab on one Linux machine (see README.md).
#
#   lab.sh deps                      install the Debian packages the lab and its hosts need
#   lab.sh up N [--systemd M]        light hosts h1..hN, plus systemd hosts s1..sM (LAB_SYSTEMD_HOSTS=M)
#   lab.sh up --systemd N            all N hosts systemd, named h1..hN (also: LAB_SYSTEMD=1 lab.sh up N)
#   lab.sh add-systemd M             add systemd hosts s1..sM to the running lab (h1..hN untouched)
#   lab.sh remove-systemd            remove the systemd hosts s1..sM again (h1..hN untouched)
#   lab.sh down [--purge]            remove everything `up` and `add-systemd` made
#   lab.sh status                    list hosts, IPs and whether sshd answers
#   lab.sh ssh HOST [CMD...]         ssh to HOST (h3, s1 or deploy@h3) with the lab key
#   lab.sh exec HOST CMD...          run CMD inside HOST's namespaces (nsenter, no ssh)
#   lab.sh stop-sshd HOST | start-sshd HOST
#   lab.sh add-nic HOST              a second NIC eth1 on labbr1 (10.78.0.x) with the default route
#
# Network: only the private bridge labbr0 (10.77.0.1/24) that this script creates; hosts hI get
# 10.77.0.(10+I), sI get 10.77.0.(200+I); no default route; nothing is forwarded anywhere else.
# add-nic gives a host what a VirtualBox VM has: the cluster network on eth0, and a second network
# (labbr1, 10.78.0.1/24, same last octet) that the default route goes to.
set -euo pipefail

LAB_DIR=${LAB_DIR:-/srv/lab}
LAB_DIR=${LAB_DIR%/}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
BRIDGE=labbr0
NET=10.77.0
GATEWAY=10.77.0.1
BRIDGE2=labbr1
NET2=10.78.0
OVDIRS=(etc var opt usr home)
MAX_HOSTS=100
MAX_SD_HOSTS=49 # s49 = 10.77.0.249; .250 (and .100) stay free for VIPs
# daemons the HA tests run on the systemd hosts: installed on the machine (the hosts' lower layer),
# never started or enabled in the root namespace, installed but disabled inside the hosts
HA_PKGS=(keepalived haproxy etcd-server etcd-client containerd)
DEPS=(openssh-server openssh-client tini iproute2 procps sudo systemd-container attr openssl util-linux
    dnf rpm createrepo-c dpkg-dev python3 python3-yaml curl
    "${HA_PKGS[@]}")
export LAB_DIR

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,20p' "$SELF" | sed 's/^# \{0,1\}//'
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

check_lab_dir() {
    [[ $LAB_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || die "LAB_DIR must be an absolute path of [A-Za-z0-9._/-] (got '$LAB_DIR')"
    case "$LAB_DIR/" in
        /etc/* | /var/* | /opt/* | /usr/* | /home/* | /root/* | /tmp/* | /run/* | /proc/* | /sys/* | /dev/* | /)
            die "LAB_DIR=$LAB_DIR lies under a directory the hosts overlay or replace; use e.g. /srv/lab" ;;
    esac
}

host_ip() { printf '%s.%d' "$NET" $((10 + $1)); }
host_dir() { printf '%s/hosts/%s' "$LAB_DIR" "$1"; }
# hI -> 10.77.0.(10+I), sI -> 10.77.0.(200+I)
name_ip() {
    case "$1" in
        h*) printf '%s.%d' "$NET" $((10 + 10#${1#h})) ;;
        s*) printf '%s.%d' "$NET" $((200 + 10#${1#s})) ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------- state
declare -A STATE=()
read_state() {
    STATE=()
    local k v
    [[ -f $LAB_DIR/state ]] || return 1
    while IFS='=' read -r k v; do
        [[ $k =~ ^[a-z_]+$ ]] && STATE[$k]=$v
    done <"$LAB_DIR/state"
    return 0
}
need_up() {
    read_state || die "lab is not up (no $LAB_DIR/state); run: lab.sh up N"
}
# the state file, written from STATE in one rename (readers never see half a file)
write_state() {
    local tmp=$LAB_DIR/.state.tmp
    printf 'mode=%s\ncount=%s\nnetns_premounted=%s\ninotify_old=%s\nnspawn_dir_existed=%s\nsystemd_count=%s\n' \
        "${STATE[mode]}" "${STATE[count]}" "${STATE[netns_premounted]:-1}" "${STATE[inotify_old]:-}" \
        "${STATE[nspawn_dir_existed]:-1}" "${STATE[systemd_count]:-0}" >"$tmp"
    mv -f "$tmp" "$LAB_DIR/state"
}
sd_count() { printf '%d' "${STATE[systemd_count]:-0}"; }
# every host of the running lab, one name a line: h1..hN, then s1..sM
all_hosts() {
    local i
    for ((i = 1; i <= ${STATE[count]:-0}; i++)); do echo "h$i"; done
    for ((i = 1; i <= $(sd_count); i++)); do echo "s$i"; done
}
host_range() {
    printf 'h1..h%s' "${STATE[count]:-N}"
    (($(sd_count) == 0)) || printf ', s1..s%d' "$(sd_count)"
}
# sI hosts are always systemd hosts; hI hosts are systemd hosts in a LAB_SYSTEMD=1 lab
is_sd_host() { [[ $1 == s* || ${STATE[mode]:-} == systemd ]]; }
# HOST may be hN, sN or user@hN; prints hN / sN
check_host() {
    local h=${1#*@} n
    if [[ $h =~ ^h([1-9][0-9]*)$ ]]; then
        n=${STATE[count]:-0}
    elif [[ $h =~ ^s([1-9][0-9]*)$ ]]; then
        n=$(sd_count)
    else
        die "bad host name '$1' (want one of $(host_range))"
    fi
    ((BASH_REMATCH[1] <= n)) || die "no host $h (lab has $(host_range))"
    printf '%s' "$h"
}

# ---------------------------------------------------------------- processes
cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }
alive() { # running and not a zombie
    local st
    st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null || true)
    [[ -n $st && $st != Z && $st != X ]]
}
# the process we started for host $1 (light: unshare, systemd: systemd-nspawn), validated
main_pid() {
    local name=$1 S pid c
    S=$(host_dir "$name")
    [[ -f $S/pid ]] || return 1
    pid=$(<"$S/pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    c=$(cmdline "$pid")
    case "$c" in
        *" __hostinit $name $S "* | *" __sdinit $name $S "* | *systemd-nspawn*" -D $S/rootfs "*) printf '%s' "$pid" ;;
        *) return 1 ;;
    esac
}
# the PID 1 of the host, seen from the root namespace (light: tini, systemd: the container's systemd)
init_pid() {
    local name=$1 pid c mypidns
    pid=$(main_pid "$name") || return 1
    mypidns=$(readlink "/proc/$pid/ns/pid")
    for c in $(pgrep -P "$pid" || true); do
        alive "$c" || continue
        [[ $(readlink "/proc/$c/ns/pid" 2>/dev/null) != "$mypidns" ]] || continue
        printf '%s' "$c"
        return 0
    done
    return 1
}

# ---------------------------------------------------------------- deps
cmd_deps() {
    need_root
    local p missing=() made_policy=0
    for p in "${DEPS[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "all lab packages are installed"
        return 0
    fi
    log "installing: ${missing[*]}"
    # keep postinst scripts from starting daemons (sshd ...) in the root namespace
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } >/dev/null || rc=$?
    ((made_policy == 0)) || rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get failed (rc $rc)"
    log "installed: ${missing[*]}"
    # the HA daemons are for the lab's systemd hosts only: their postinst enabled them in the
    # machine's /etc (policy-rc.d kept them from starting); disable them there again. The hosts
    # hide the machine's *.wants dirs anyway, so inside a host they are installed but disabled.
    local units=()
    for p in "${missing[@]}"; do
        case "$p" in
            keepalived | haproxy) units+=("$p.service") ;;
            etcd-server) units+=(etcd.service) ;;
            containerd) units+=(containerd.service) ;;
        esac
    done
    if ((${#units[@]} > 0)) && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --no-reload "${units[@]}" >/dev/null 2>&1 ||
            log "warning: could not disable ${units[*]} in the machine's /etc"
        log "disabled in the machine's /etc (not started either): ${units[*]}"
    fi
}

check_tools() {
    local t missing=()
    for t in ip unshare nsenter tini sshd ssh ssh-keygen sudo visudo openssl pgrep setsid; do
        command -v "$t" >/dev/null 2>&1 || [[ -x /usr/sbin/$t ]] || missing+=("$t")
    done
    if [[ ${1:-} == systemd ]]; then
        for t in systemd-nspawn setfattr; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    fi
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (run: lab.sh deps)"
    dpkg-query -W -f='${db:Status-Status}' sudo 2>/dev/null | grep -qx installed || die "sudo is not installed (run: lab.sh deps)"
}

# ---------------------------------------------------------------- up
# Files shared by all hosts: users (deploy), sudoers, /root, /home/deploy, sshd whiteouts, masks.
# deploy's uid/gid for a new lab: the first id from 2000 on that the machine does not use
free_uid() {
    local uid=2000
    while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; do uid=$((uid + 1)); done
    printf '%d' "$uid"
}
# deploy's uid in the running lab (so hosts added later agree with the first ones)
lab_deploy_uid() {
    local f
    for f in "$LAB_DIR"/hosts/*/ov/etc/upper/passwd "$LAB_DIR"/hosts/*/upper/etc/passwd; do
        [[ -f $f ]] || continue
        awk -F: '$1 == "deploy" {print $3; f = 1; exit} END {exit !f}' "$f" && return 0
    done
    free_uid
}
# /etc/hosts of the hosts: COUNT hI hosts and SDCOUNT sI hosts
etc_hosts() {
    local count=$1 sdcount=$2 i
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    printf '%s\tlabgw\n' "$GATEWAY"
    for ((i = 1; i <= count; i++)); do printf '%s\th%d\n' "$(name_ip "h$i")" "$i"; done
    for ((i = 1; i <= sdcount; i++)); do printf '%s\ts%d\n' "$(name_ip "s$i")" "$i"; done
}

# build_template MODE DIR HASH UID COUNT SDCOUNT: what all hosts of one kind share
build_template() {
    local mode=$1 T=$2 hash=$3 uid=$4 count=$5 sdcount=$6
    local pub gid f day
    pub=$(<"$LAB_DIR/keys/id_lab.pub")
    rm -rf "$T"
    mkdir -p "$T/etc/ssh/sshd_config.d" "$T/etc/sudoers.d" "$T/home" "$T/root"

    # deploy user: copies of the machine's user databases without any old deploy entry
    gid=$uid
    day=$(($(date +%s) / 86400))
    for f in passwd group shadow gshadow; do
        [[ -f /etc/$f ]] || continue
        cp -p "/etc/$f" "$T/etc/$f"
        grep -v '^deploy:' "/etc/$f" >"$T/etc/$f" || true
    done
    printf 'deploy:x:%d:%d:lab deploy user:/home/deploy:/bin/bash\n' "$uid" "$gid" >>"$T/etc/passwd"
    printf 'deploy:x:%d:\n' "$gid" >>"$T/etc/group"
    printf 'deploy:%s:%d:0:99999:7:::\n' "$hash" "$day" >>"$T/etc/shadow"
    [[ ! -f $T/etc/gshadow ]] || printf 'deploy:!::\n' >>"$T/etc/gshadow"
    cat >"$T/etc/sudoers.d/lab-deploy" <<'EOF'
# generated by tests/lab/lab.sh: deploy may use sudo, but always with its password
Defaults:deploy !lecture, timestamp_timeout=0, passwd_tries=1
deploy ALL=(ALL:ALL) ALL
EOF
    chmod 0440 "$T/etc/sudoers.d/lab-deploy"
    visudo -cqf "$T/etc/sudoers.d/lab-deploy" || die "generated sudoers file is invalid"

    # fresh /root and /home/deploy, both accept the lab key
    cp -a /etc/skel/. "$T/root/"
    mkdir -p "$T/root/.ssh"
    chmod 0700 "$T/root/.ssh"
    printf '%s\n' "$pub" >"$T/root/.ssh/authorized_keys"
    chmod 0600 "$T/root/.ssh/authorized_keys"
    chmod 0700 "$T/root"
    mkdir -p "$T/home/deploy/.ssh"
    cp -a /etc/skel/. "$T/home/deploy/"
    printf '%s\n' "$pub" >"$T/home/deploy/.ssh/authorized_keys"
    chmod 0700 "$T/home/deploy" "$T/home/deploy/.ssh"
    chmod 0600 "$T/home/deploy/.ssh/authorized_keys"
    chown -R "$uid:$gid" "$T/home/deploy"

    # hide the machine's own host keys and sshd drop-ins (whiteouts)
    for f in /etc/ssh/ssh_host_* /etc/ssh/sshd_config.d/*; do
        [[ -e $f && $f != /etc/ssh/ssh_host_ed25519_key* ]] || continue
        mknod "$T$f" c 0 0
    done
    etc_hosts "$count" "$sdcount" >"$T/etc/hosts"

    if [[ $mode == systemd ]]; then
        printf '# lab: no mounts\n' >"$T/etc/fstab"
        # only ssh.service stays enabled from /etc (the lower root is a dev box; keepalived,
        # haproxy, etcd ... are installed there but stay disabled here until a playbook enables them)
        local w u
        for w in multi-user.target.wants getty.target.wants sysinit.target.wants timers.target.wants \
            default.target.wants network-online.target.wants sockets.target.wants; do
            mkdir -p "$T/etc/systemd/system/$w"
            setfattr -n trusted.overlay.opaque -v y "$T/etc/systemd/system/$w"
        done
        ln -s /lib/systemd/system/ssh.service "$T/etc/systemd/system/multi-user.target.wants/ssh.service"
        ln -s /lib/systemd/system/remote-fs.target "$T/etc/systemd/system/multi-user.target.wants/remote-fs.target"
        ln -s /lib/systemd/system/machines.target "$T/etc/systemd/system/multi-user.target.wants/machines.target"
        for u in getty@.service console-getty.service container-getty@.service serial-getty@.service \
            systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service \
            networking.service systemd-resolved.service systemd-timesyncd.service; do
            ln -sf /dev/null "$T/etc/systemd/system/$u"
        done
        setfattr -n trusted.overlay.opaque -v y "$T/root"
    fi
}

# prep_host MODE NAME TEMPLATE: overlay upper dirs seeded from the template + own host key,
# sshd config, hostname; address in the host's netns
prep_host() {
    local mode=$1 name=$2 T=$3 S ip E d
    [[ $name =~ ^[hs][1-9][0-9]*$ && -d $T ]] || die "prep_host: bad arguments '$*'"
    S=$(host_dir "$name")
    ip=$(name_ip "$name")
    rm -rf "$S"
    mkdir -p "$S"
    if [[ $mode == light ]]; then
        for d in "${OVDIRS[@]}"; do mkdir -p "$S/ov/$d/upper" "$S/ov/$d/work"; done
        cp -a "$T/etc/." "$S/ov/etc/upper/"
        cp -a "$T/home/." "$S/ov/home/upper/"
        cp -a "$T/root" "$S/root"
        E=$S/ov/etc/upper
    else
        mkdir -p "$S/work" "$S/rootfs"
        cp -a "$T" "$S/upper"
        E=$S/upper/etc
        mkdir -p "/sys/fs/cgroup/systemd/lab-$name" "/sys/fs/cgroup/unified/lab-$name"
    fi
    ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$E/ssh/ssh_host_ed25519_key"
    cat >"$E/ssh/sshd_config.d/00-lab.conf" <<EOF
# generated by tests/lab/lab.sh
HostKey /etc/ssh/ssh_host_ed25519_key
ListenAddress $ip
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 100:30:200
MaxSessions 64
EOF
    printf '%s\n' "$name" >"$E/hostname"
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$E/machine-id"
    echo >>"$E/machine-id"

    # network namespace (created by up) -> address on eth0, no default route
    ip -n "lab-$name" link set lo up
    ip -n "lab-$name" addr add "$ip/24" dev eth0
    ip -n "lab-$name" link set eth0 up
}

launch_host() {
    local mode=$1 name=$2 S
    S=$(host_dir "$name")
    if [[ $mode == light ]]; then
        setsid ip netns exec "lab-$name" unshare --mount --uts --pid --fork --mount-proc --kill-child=SIGKILL -- \
            tini -s -g -- /bin/bash "$SELF" __hostinit "$name" "$S" "" </dev/null >"$S/console.log" 2>&1 &
    else
        setsid unshare --mount --propagation private -- \
            /bin/bash "$SELF" __sdinit "$name" "$S" "" </dev/null >"$S/console.log" 2>&1 &
    fi
    echo "$!" >"$S/pid"
}

# PID 2 of a light host (child of tini), inside its own mount/UTS/PID namespaces and its netns
host_init() {
    local name=$1 S=$2 d
    for d in "${OVDIRS[@]}"; do
        mount -t overlay "lab-$name-$d" -o "lowerdir=/$d,upperdir=$S/ov/$d/upper,workdir=$S/ov/$d/work" "/$d"
    done
    mount --bind "$S/root" /root
    mount -t tmpfs -o mode=0755,nosuid,nodev "lab-$name-run" /run
    mkdir /run/sshd /run/lock
    chmod 0755 /run/sshd
    chmod 1777 /run/lock
    mount -t tmpfs -o mode=1777,nosuid,nodev "lab-$name-tmp" /tmp
    # kernel.*/vm.* are global: read-only; net.* belongs to the host's netns: writable
    mount --bind /proc/sys /proc/sys
    mount -o remount,bind,ro /proc/sys
    mount --bind /proc/sys/net /proc/sys/net
    mount -o remount,bind,rw /proc/sys/net
    hostname "$name"
    /usr/sbin/sshd -E /var/log/sshd.log
    exec sleep infinity
}

# systemd host: own cgroups, overlay of / (private mount ns), then systemd-nspawn boots systemd
sd_init() {
    local name=$1 S=$2
    echo "$$" >"/sys/fs/cgroup/systemd/lab-$name/cgroup.procs"
    echo "$$" >"/sys/fs/cgroup/unified/lab-$name/cgroup.procs"
    mount -t overlay "lab-$name-root" -o "lowerdir=/,upperdir=$S/upper,workdir=$S/work" "$S/rootfs"
    stat -c 'inode-%d:%i' "$S/rootfs" >"$S/nspawn_lock" # nspawn's lock file name for this tree
    # A descriptor the caller left open would stay open for the host's whole life: a test run's
    # lock on the lab (flock /srv/lab/queue cargo test ..., whose HA tests make these hosts again
    # at their end) would then be held by the hosts after the run, and every later run waits.
    local fd
    for fd in $(ls /proc/$$/fd); do
        case $fd in 0 | 1 | 2 | 255) ;; *) eval "exec $fd>&-" ;; esac
    done
    exec env SYSTEMD_NSPAWN_API_VFS_WRITABLE=network systemd-nspawn -D "$S/rootfs" -M "$name" -b \
        --register=no --keep-unit --console=passive --network-namespace-path="/run/netns/lab-$name" \
        --capability=CAP_NET_ADMIN --bind="$LAB_DIR/shared"
}

SSH_OPTS=()
ssh_opts() {
    SSH_OPTS=(-F "$LAB_DIR/ssh_config" -o ConnectTimeout=5)
    # add-systemd waits for its new hosts before it publishes their client files
    if [[ -n ${LAB_CLIENT_STAGING:-} ]]; then
        SSH_OPTS=(-F "$LAB_CLIENT_STAGING/ssh_config" -o "UserKnownHostsFile=$LAB_CLIENT_STAGING/known_hosts"
            -o ConnectTimeout=5)
    fi
}

# wait until hN's sshd accepts a real ssh login (strict host key checking) and says its name
wait_ssh() {
    local name=$1 timeout=$2 ip out err deadline
    ip=$(name_ip "$name")
    deadline=$((SECONDS + timeout))
    ssh_opts
    while ((SECONDS < deadline)); do
        # right after the launch the PID can still be a fork of this script (not yet exec'd)
        if ! main_pid "$name" >/dev/null && ! { sleep 0.5 && main_pid "$name" >/dev/null; }; then
            echo "$name: host process is gone (see $(host_dir "$name")/console.log)"
            return 1
        fi
        if timeout 2 bash -c "exec 3<>/dev/tcp/$ip/22" 2>/dev/null; then
            if out=$(ssh "${SSH_OPTS[@]}" "$name" hostname 2>&1); then
                [[ $out == "$name" ]] && return 0
                err="hostname says '$out'"
            else
                err=$out
            fi
        else
            err="port 22 closed"
        fi
        sleep 0.2
    done
    echo "$name ($ip): sshd not ready after ${timeout}s: ${err:-?}"
    return 1
}

# known_hosts, ssh_config and inventory.toml for all hosts in STATE (count, systemd_count): made
# in a staging directory and renamed into place, so a reader sees the old or the new file
write_client_files() {
    gen_client_files "$LAB_DIR/hosts/.client" && install_client_files "$LAB_DIR/hosts/.client"
}
install_client_files() {
    local D=$1
    mv -f "$D/known_hosts" "$LAB_DIR/known_hosts"
    mv -f "$D/ssh_config" "$LAB_DIR/ssh_config"
    mv -f "$D/inventory.toml" "$LAB_DIR/inventory.toml"
    rmdir "$D"
}
gen_client_files() {
    local D=$1 count=${STATE[count]} sdcount i name names=() lab=() sd=()
    rm -rf "$D"
    mkdir -p "$D"
    sdcount=$(sd_count)
    for ((i = 1; i <= count; i++)); do lab+=("h$i"); done
    for ((i = 1; i <= sdcount; i++)); do sd+=("s$i"); done
    names=("${lab[@]}" "${sd[@]}")
    for name in "${names[@]}"; do
        printf '%s,%s %s\n' "$name" "$(name_ip "$name")" "$(cut -d' ' -f1-2 "$(host_dir "$name")/host_ed25519.pub")"
    done >"$D/known_hosts"
    {
        echo "# generated by tests/lab/lab.sh"
        for name in "${names[@]}"; do
            cat <<EOT
Host $name
    HostName $(name_ip "$name")
    User root
    Port 22
    IdentityFile $LAB_DIR/keys/id_lab
    IdentitiesOnly yes
    UserKnownHostsFile $LAB_DIR/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes

EOT
        done
    } >"$D/ssh_config"
    {
        echo "# generated by tests/lab/lab.sh"
        echo "[defaults]"
        echo 'connection = "ssh"'
        echo 'user = "root"'
        echo 'port = 22'
        echo "identity_file = \"$LAB_DIR/keys/id_lab\""
        echo "known_hosts = \"$LAB_DIR/known_hosts\""
        echo
        for name in "${names[@]}"; do
            printf '[hosts.%s]\naddress = "%s"\n\n' "$name" "$(name_ip "$name")"
        done
        toml_group lab "${lab[@]}"
        if ((sdcount > 0)); then
            echo
            toml_group systemd "${sd[@]}"
        fi
    } >"$D/inventory.toml"
}
toml_group() { # name members...
    local g=$1 sep="" m
    shift
    printf '[groups.%s]\nhosts = [' "$g"
    for m in "$@"; do
        printf '%s"%s"' "$sep" "$m"
        sep=", "
    done
    printf ']\n'
}

raise_inotify() { # for systemd hosts; records the old value in STATE[inotify_old] (down restores it)
    local old
    old=$(cat /proc/sys/fs/inotify/max_user_instances)
    if ((old < 1024)); then
        log "raising fs.inotify.max_user_instances $old -> 1024 (restored by down)"
        echo 1024 >/proc/sys/fs/inotify/max_user_instances
        [[ -n ${STATE[inotify_old]:-} ]] || STATE[inotify_old]=$old
    fi
}

# eth0's MAC address: fixed per host name (hI 02:77:00:00:..:.., sI 02:77:00:01:..:..), so a host
# that is removed and made again is still reached through the neighbour entries that others cached
host_mac() {
    local n=${1:1} t=00
    [[ $1 == s* ]] && t=01
    printf '02:77:00:%s:%02x:%02x' "$t" $((10#$n / 256)) $((10#$n % 256))
}
# The bridge takes the lowest MAC address of its ports unless one was set: adding a host could
# change it, and every running host would send to the old address until its ARP entry expires.
# Setting the address (to the one it has) keeps it for good.
pin_bridge_mac() {
    [[ $(cat "/sys/class/net/$BRIDGE/addr_assign_type") == 3 ]] ||
        ip link set dev "$BRIDGE" address "$(cat "/sys/class/net/$BRIDGE/address")"
}
# make_netns NAME...: netns lab-NAME with eth0, veth vlab-NAME on the bridge, in one ip process
make_netns() {
    local n
    for n in "$@"; do
        echo "netns add lab-$n"
        echo "link add vlab-$n type veth peer name eth0 address $(host_mac "$n") netns lab-$n"
        echo "link set vlab-$n master $BRIDGE up"
    done | ip -batch -
}

# start_hosts MODE TEMPLATE NAME...: prepare (in parallel) and launch hosts of one kind
prep_hosts() {
    local mode=$1 T=$2 jobs name etc
    shift 2
    jobs=$(($(nproc) * 2))
    printf '%s\n' "$@" | xargs -P "$jobs" -I{} "$SELF" __prep "$mode" {} "$T" || return 1
    if [[ $mode == light ]]; then etc=ov/etc/upper; else etc=upper/etc; fi
    for name in "$@"; do
        cp "$(host_dir "$name")/$etc/ssh/ssh_host_ed25519_key.pub" "$(host_dir "$name")/host_ed25519.pub"
    done
}

# wait_hosts TIMEOUT NAME...: until every host accepts a strict ssh login; prints why not
wait_hosts() {
    local timeout=$1 fails n
    shift
    fails=$(printf '%s\n' "$@" | xargs -P 10 -I{} "$SELF" __waitssh {} "$timeout" || true)
    [[ -n $fails ]] || return 0
    log "these hosts did not come up:"
    printf '%s\n' "$fails" | sort -V >&2
    for n in $(printf '%s\n' "$fails" | awk '{print $1}' | tr -d ':' | sort -u | head -3); do
        [[ $n =~ ^[hs][0-9]+$ ]] || continue
        log "--- $n console.log (tail)"
        tail -n 15 "$(host_dir "$n")/console.log" >&2 2>/dev/null || true
    done
    return 1
}

# parse_up_args ARGS...: sets UP_MODE, UP_COUNT, UP_SDCOUNT (see the usage at the top)
parse_up_args() {
    local mode=light count="" sdcount=${LAB_SYSTEMD_HOSTS:-} sdarg="" a k args=("$@")
    [[ ${LAB_SYSTEMD:-0} == 1 ]] && mode=systemd
    for ((k = 0; k < ${#args[@]}; k++)); do
        a=${args[k]}
        case "$a" in
            --systemd=*) sdarg=${a#*=} ;;
            --systemd)
                if ((k + 1 < ${#args[@]})) && [[ ${args[k + 1]} =~ ^[0-9]+$ ]]; then
                    k=$((k + 1))
                    sdarg=${args[k]}
                else
                    mode=systemd # `up N --systemd`: all hosts systemd (as before)
                fi
                ;;
            --light) mode=light ;;
            *) [[ -z $count ]] || die "usage: lab.sh up N [--systemd M]"; count=$a ;;
        esac
    done
    if [[ -n $sdarg && -z $count ]]; then
        # `up --systemd N` (one number): all N hosts systemd, named h1..hN (as before)
        mode=systemd count=$sdarg sdarg=""
    fi
    [[ -z $sdarg ]] || sdcount=$sdarg
    sdcount=${sdcount:-0}
    [[ $count =~ ^[1-9][0-9]*$ ]] || die "usage: lab.sh up N [--systemd M]   (N = 1..$MAX_HOSTS)"
    ((count <= MAX_HOSTS)) || die "at most $MAX_HOSTS hosts"
    if ! [[ $sdcount =~ ^[0-9]+$ ]] || ((10#$sdcount > MAX_SD_HOSTS)); then
        die "--systemd M / LAB_SYSTEMD_HOSTS=M: M = 0..$MAX_SD_HOSTS (got '$sdcount')"
    fi
    UP_MODE=$mode UP_COUNT=$count UP_SDCOUNT=$((10#$sdcount))
}

cmd_up() {
    local mode count sdcount
    parse_up_args "$@"
    mode=$UP_MODE count=$UP_COUNT sdcount=$UP_SDCOUNT
    need_root
    check_lab_dir
    if [[ $mode == systemd ]] || ((sdcount > 0)); then check_tools systemd; else check_tools light; fi
    if read_state; then
        die "lab is already up (${STATE[count]} ${STATE[mode]} hosts$( (($(sd_count) == 0)) || printf ' + %d systemd hosts' "$(sd_count)") in $LAB_DIR); run: lab.sh down"
    fi
    if [[ -d $LAB_DIR/hosts ]] || ip netns list 2>/dev/null | grep -qE '^lab-[hs][0-9]'; then
        log "cleaning up leftovers of an earlier run"
        cmd_down >/dev/null
    fi
    [[ $mode == light ]] || ((count <= 30)) || log "warning: $count systemd hosts need ~17 MB RAM each and boot slowly"

    local t0=$SECONDS pw hash netns_mounted=0 nspawn_dir=0 start_ns
    start_ns=$(date +%s%N)
    mkdir -p "$LAB_DIR/keys" "$LAB_DIR/shared" "$LAB_DIR/hosts"
    : >"$LAB_DIR/.lab"
    chmod 0755 "$LAB_DIR"
    chmod 0777 "$LAB_DIR/shared"
    [[ -f $LAB_DIR/keys/id_lab ]] ||
        ssh-keygen -q -t ed25519 -N '' -C "lab@$(hostname)" -f "$LAB_DIR/keys/id_lab"
    chmod 0600 "$LAB_DIR/keys/id_lab"

    # become password: only ever in $LAB_DIR/become_password (0600, no trailing newline)
    pw=${LAB_BECOME_PASSWORD:-}
    [[ -n $pw ]] || pw="deploy-$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 16 || true)"
    (umask 077 && printf '%s' "$pw" >"$LAB_DIR/become_password")
    chmod 0600 "$LAB_DIR/become_password"
    hash=$(printf '%s' "$pw" | openssl passwd -6 -stdin)
    unset pw

    mountpoint -q /run/netns 2>/dev/null && netns_mounted=1
    [[ ! -d /run/systemd/nspawn ]] || nspawn_dir=1
    STATE=([mode]=$mode [count]=$count [netns_premounted]=$netns_mounted [inotify_old]=""
        [nspawn_dir_existed]=$nspawn_dir [systemd_count]=$sdcount)
    if [[ $mode == systemd ]] || ((sdcount > 0)); then raise_inotify; fi
    write_state

    local rc=0
    up_inner "$mode" "$count" "$sdcount" "$hash" || rc=$?
    if ((rc != 0)); then
        if [[ ${LAB_KEEP_ON_FAILURE:-0} == 1 ]]; then
            log "up FAILED; lab left as is (LAB_KEEP_ON_FAILURE=1); clean up with: lab.sh down"
        else
            log "up FAILED; tearing down (set LAB_KEEP_ON_FAILURE=1 to keep it for debugging)"
            cmd_down >/dev/null || true
        fi
        exit 1
    fi
    local ms=$((($(date +%s%N) - start_ns) / 1000000)) sdmsg=""
    ((sdcount == 0)) || sdmsg=" + $sdcount systemd hosts (s1=$(name_ip s1) .. s$sdcount=$(name_ip "s$sdcount"))"
    log "$count $mode hosts$sdmsg up in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s ($((SECONDS - t0))s): h1=$(host_ip 1) .. h$count=$(host_ip "$count")"
    log "inventory: $LAB_DIR/inventory.toml   ssh: ssh -F $LAB_DIR/ssh_config h1"
}

up_inner() {
    local mode=$1 count=$2 sdcount=$3 hash=$4 uid i timeout names=() sdnames=()
    for ((i = 1; i <= count; i++)); do names+=("h$i"); done
    for ((i = 1; i <= sdcount; i++)); do sdnames+=("s$i"); done
    uid=$(free_uid)
    build_template "$mode" "$LAB_DIR/hosts/.tpl" "$hash" "$uid" "$count" "$sdcount"
    ((sdcount == 0)) || build_template systemd "$LAB_DIR/hosts/.tpl-sd" "$hash" "$uid" "$count" "$sdcount"

    # bridge + all netns/veths in one ip process
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/24" dev "$BRIDGE"
    pin_bridge_mac
    ip link set "$BRIDGE" up
    make_netns "${names[@]}" "${sdnames[@]}" || { log "creating network namespaces failed"; return 1; }

    prep_hosts "$mode" "$LAB_DIR/hosts/.tpl" "${names[@]}" || { log "preparing hosts failed"; return 1; }
    if ((sdcount > 0)); then
        prep_hosts systemd "$LAB_DIR/hosts/.tpl-sd" "${sdnames[@]}" || { log "preparing systemd hosts failed"; return 1; }
    fi
    write_client_files
    rm -rf "$LAB_DIR/hosts/.tpl" "$LAB_DIR/hosts/.tpl-sd"

    for i in "${names[@]}"; do launch_host "$mode" "$i"; done
    for i in "${sdnames[@]}"; do launch_host systemd "$i"; done

    if [[ $mode == light ]]; then timeout=$((30 + count / 2)); else timeout=$((60 + count * 2)); fi
    ((sdcount == 0 || timeout >= 60 + 2 * (sdcount + count))) || timeout=$((60 + 2 * (sdcount + count)))
    timeout=${LAB_TIMEOUT:-$timeout}
    wait_hosts "$timeout" "${names[@]}" "${sdnames[@]}"
}

# ---------------------------------------------------------------- add-systemd / remove-systemd
cmd_add_systemd() {
    if (($# != 1)) || ! [[ $1 =~ ^[1-9][0-9]*$ ]] || (($1 > MAX_SD_HOSTS)); then
        die "usage: lab.sh add-systemd M   (M = 1..$MAX_SD_HOSTS)"
    fi
    local m=$1 hash uid i names=() start_ns rc=0 ms C=$LAB_DIR/hosts/.client-sd
    need_root
    check_lab_dir
    check_tools systemd
    need_up
    (($(sd_count) == 0)) || die "the lab already has systemd hosts s1..s$(sd_count); run: lab.sh remove-systemd"
    ip link show "$BRIDGE" >/dev/null 2>&1 || die "bridge $BRIDGE is missing; the lab is broken (lab.sh down; lab.sh up N)"
    [[ -s $LAB_DIR/become_password && -f $LAB_DIR/keys/id_lab.pub ]] || die "$LAB_DIR/become_password or keys/ missing"
    start_ns=$(date +%s%N)
    if compgen -G "$LAB_DIR/hosts/s*" >/dev/null || ip netns list 2>/dev/null | grep -qE '^lab-s[0-9]'; then
        log "removing leftovers of earlier systemd hosts"
        teardown_hosts '^s[0-9]+$' || die "could not remove the leftovers"
    fi

    hash=$(openssl passwd -6 -stdin <"$LAB_DIR/become_password")
    uid=$(lab_deploy_uid)
    for ((i = 1; i <= m; i++)); do names+=("s$i"); done
    raise_inotify
    write_state # systemd_count stays 0 until the hosts answer; inotify_old is kept for down

    pin_bridge_mac
    {
        build_template systemd "$LAB_DIR/hosts/.tpl-sd" "$hash" "$uid" "${STATE[count]}" "$m" &&
            make_netns "${names[@]}" &&
            prep_hosts systemd "$LAB_DIR/hosts/.tpl-sd" "${names[@]}" &&
            rm -rf "$LAB_DIR/hosts/.tpl-sd" &&
            # the new client files, staged: wait_ssh uses them, everybody else still the old ones
            STATE[systemd_count]=$m &&
            gen_client_files "$C" &&
            STATE[systemd_count]=0 &&
            for i in "${names[@]}"; do launch_host systemd "$i"; done &&
            export LAB_CLIENT_STAGING=$C &&
            wait_hosts "${LAB_TIMEOUT:-$((60 + 2 * m))}" "${names[@]}"
    } || rc=$?
    unset LAB_CLIENT_STAGING
    STATE[systemd_count]=0
    if ((rc != 0)); then
        if [[ ${LAB_KEEP_ON_FAILURE:-0} == 1 ]]; then
            log "add-systemd FAILED; hosts left as they are (LAB_KEEP_ON_FAILURE=1); clean up with: lab.sh remove-systemd"
        else
            log "add-systemd FAILED; removing the systemd hosts again (h1..h${STATE[count]} untouched)"
            remove_sd_hosts || true
        fi
        exit 1
    fi
    # client files first, then the state: whoever reads systemd_count finds the hosts' keys
    install_client_files "$C"
    STATE[systemd_count]=$m
    write_state
    ms=$((($(date +%s%N) - start_ns) / 1000000))
    log "$m systemd hosts added in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s: s1=$(name_ip s1) .. s$m=$(name_ip "s$m") (group 'systemd' in inventory.toml)"
}

cmd_remove_systemd() {
    (($# == 0)) || die "usage: lab.sh remove-systemd"
    need_root
    check_lab_dir
    need_up
    local m start_ns ms
    m=$(compgen -G "$LAB_DIR/hosts/s*" | grep -cE '/s[0-9]+$' || true)
    start_ns=$(date +%s%N)
    # state first, then client files: nobody picks a host that is about to go
    STATE[systemd_count]=0
    write_state
    write_client_files
    remove_sd_hosts || die "could not remove every systemd host (see above)"
    ms=$((($(date +%s%N) - start_ns) / 1000000))
    log "removed $m systemd hosts in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s (h1..h${STATE[count]} untouched)"
}
# end and remove every sN host; in a light lab also undo what only systemd hosts needed
remove_sd_hosts() {
    local rc=0
    teardown_hosts '^s[0-9]+$' || rc=1
    rm -rf "$LAB_DIR/hosts/.tpl-sd" "$LAB_DIR/hosts/.client-sd"
    if [[ ${STATE[mode]} == light ]]; then
        if [[ -n ${STATE[inotify_old]:-} ]]; then
            echo "${STATE[inotify_old]}" >/proc/sys/fs/inotify/max_user_instances || true
            STATE[inotify_old]=""
            write_state
        fi
        if [[ ${STATE[nspawn_dir_existed]:-1} == 0 ]]; then
            rmdir /run/systemd/nspawn/locks /run/systemd/nspawn/propagate /run/systemd/nspawn/unix-export \
                /run/systemd/nspawn 2>/dev/null || true
        fi
    fi
    return "$rc"
}

# ---------------------------------------------------------------- down
wait_gone() { # timeout pids...
    local t=$1 p left
    shift
    local deadline=$((SECONDS + t))
    while :; do
        left=()
        for p in "$@"; do alive "$p" && left+=("$p"); done
        ((${#left[@]} == 0)) && return 0
        ((SECONDS < deadline)) || { printf '%s ' "${left[@]}"; return 1; }
        sleep 0.1
    done
}

# teardown_hosts RE: end the hosts whose names match the ERE RE and remove their processes,
# netns, veths, cgroups, nspawn leftovers and files. Touches nothing of other hosts.
teardown_hosts() {
    local re=$1 d name pid ipid pids=() inits=() sdpids=() left cg p a ns m rc=0
    for d in "$LAB_DIR"/hosts/*; do
        [[ -d $d ]] || continue
        name=${d##*/}
        [[ $name =~ $re ]] || continue
        pid=$(main_pid "$name") || continue
        if ipid=$(init_pid "$name") && [[ $(cmdline "$ipid") == tini* ]]; then
            inits+=("$ipid")
        fi
        if [[ $(cmdline "$pid") == *systemd-nspawn* ]]; then sdpids+=("$pid"); else pids+=("$pid"); fi
    done
    # light hosts: SIGKILL tini (= PID 1) ends the whole host; unshare follows
    ((${#inits[@]} == 0)) || kill -KILL "${inits[@]}" 2>/dev/null || true
    ((${#pids[@]} == 0)) || kill -TERM "${pids[@]}" 2>/dev/null || true
    # systemd hosts: SIGTERM to nspawn = orderly halt of the container
    ((${#sdpids[@]} == 0)) || kill -TERM "${sdpids[@]}" 2>/dev/null || true
    if ((${#inits[@]} + ${#pids[@]} > 0)) && ! left=$(wait_gone 10 "${inits[@]}" "${pids[@]}"); then
        log "still alive after SIGTERM, sending SIGKILL: $left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        wait_gone 5 "${inits[@]}" "${pids[@]}" >/dev/null || log "WARNING: could not end: $left"
    fi
    if ((${#sdpids[@]} > 0)) && ! left=$(wait_gone 20 "${sdpids[@]}"); then
        log "containers did not halt in 20s, sending SIGKILL: $left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        wait_gone 5 "${sdpids[@]}" >/dev/null || log "WARNING: could not end: $left"
    fi
    # systemd hosts: whatever is still in a lab cgroup was started by that container
    for cg in /sys/fs/cgroup/systemd/lab-* /sys/fs/cgroup/unified/lab-*; do
        [[ -d $cg && ${cg##*/lab-} =~ $re ]] || continue
        while read -r p; do
            if [[ $p =~ ^[0-9]+$ ]] && alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
        done < <(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done

    # network
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' || true); do
        [[ $ns == lab-* && ${ns#lab-} =~ $re ]] || continue
        ip netns del "$ns" 2>/dev/null || log "WARNING: could not delete netns $ns"
    done
    for a in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 || true); do
        [[ $a == vlab-* && ${a#vlab-} =~ $re ]] || continue
        ip link del "$a" 2>/dev/null || true
    done
    # the machine's neighbour entries of the removed hosts (a new host may get another MAC)
    for d in "$LAB_DIR"/hosts/*; do
        name=${d##*/}
        [[ -d $d && $name =~ $re && $name =~ ^[hs][0-9]+$ ]] || continue
        ip neigh flush to "$(name_ip "$name")" 2>/dev/null || true
    done

    # cgroups, depth first
    for cg in /sys/fs/cgroup/*/lab-*; do
        [[ -d $cg && ${cg##*/lab-} =~ $re ]] || continue
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ ! -d $cg ]] || sleep 0.5
        [[ ! -d $cg ]] || find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null ||
            { log "WARNING: could not remove cgroup $cg"; rc=1; }
    done
    # systemd-nspawn leftovers (/run is not a tmpfs on this machine)
    if [[ -d /run/systemd/nspawn ]]; then
        for d in "$LAB_DIR"/hosts/*/nspawn_lock; do
            [[ -f $d ]] || continue
            name=${d%/nspawn_lock}
            [[ ${name##*/} =~ $re ]] || continue
            a=$(<"$d")
            if [[ $a =~ ^inode-[0-9]+:[0-9]+$ ]]; then rm -f "/run/systemd/nspawn/locks/$a"; fi
        done
        for d in /run/systemd/nspawn/propagate/* /run/systemd/nspawn/unix-export/*; do
            [[ -e $d && ${d##*/} =~ $re ]] || continue
            awk -v d="$d" '$5 == d || index($5, d "/") == 1 {f=1} END {exit !f}' /proc/self/mountinfo ||
                rm -rf --one-file-system "$d"
        done
    fi

    # files: nothing may be mounted below a host's directory
    for d in "$LAB_DIR"/hosts/*; do
        [[ -d $d && ${d##*/} =~ $re ]] || continue
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v d="$d/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
        if awk -v d="$d/" 'index($5, d) == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
            log "WARNING: something is still mounted below $d; not removing it"
            rc=1
            continue
        fi
        rm -rf --one-file-system "$d"
    done
    return "$rc"
}

cmd_down() {
    local purge=0 a
    for a in "$@"; do
        case "$a" in
            --purge) purge=1 ;;
            *) die "usage: lab.sh down [--purge]" ;;
        esac
    done
    need_root
    check_lab_dir
    read_state || true
    # every host, light and systemd (hN and sN)
    teardown_hosts '^[hs][0-9]+$' || true

    ! ip link show "$BRIDGE" >/dev/null 2>&1 || ip link del "$BRIDGE"
    ! ip link show "$BRIDGE2" >/dev/null 2>&1 || ip link del "$BRIDGE2"
    if [[ ${STATE[netns_premounted]:-1} == 0 ]] && mountpoint -q /run/netns 2>/dev/null &&
        [[ -z $(ip netns list 2>/dev/null) ]]; then
        umount /run/netns 2>/dev/null || true
        rmdir /run/netns 2>/dev/null || true
    fi
    if [[ ${STATE[nspawn_dir_existed]:-1} == 0 ]]; then
        rmdir /run/systemd/nspawn/locks /run/systemd/nspawn/propagate /run/systemd/nspawn/unix-export \
            /run/systemd/nspawn 2>/dev/null || true
    fi
    if [[ -n ${STATE[inotify_old]:-} ]]; then
        echo "${STATE[inotify_old]}" >/proc/sys/fs/inotify/max_user_instances || true
    fi

    # files: make sure nothing is mounted below LAB_DIR first
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$LAB_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    if awk -v d="$LAB_DIR/" 'index($5, d) == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
        die "something is still mounted below $LAB_DIR; not removing files"
    fi
    if [[ -d $LAB_DIR ]]; then
        rm -rf --one-file-system "$LAB_DIR/hosts"
        rm -f "$LAB_DIR/state" "$LAB_DIR/inventory.toml" "$LAB_DIR/ssh_config" "$LAB_DIR/known_hosts" \
            "$LAB_DIR/become_password" "$LAB_DIR/.state.tmp"
        if ((purge == 1)) && [[ -f $LAB_DIR/.lab ]]; then
            rm -rf --one-file-system "$LAB_DIR"
        fi
    fi
    log "down: lab removed"
}

# ---------------------------------------------------------------- a second NIC
# The veth goes with the host's network namespace when the host is removed; down removes labbr1.
cmd_add_nic() {
    (($# == 1)) || die "usage: lab.sh add-nic HOST"
    need_root
    need_up
    local name ip
    name=$(check_host "$1")
    ip=$(name_ip "$name")
    if ! ip link show "$BRIDGE2" >/dev/null 2>&1; then
        ip link add "$BRIDGE2" type bridge
        ip addr add "$NET2.1/24" dev "$BRIDGE2"
        ip link set "$BRIDGE2" up
    fi
    ip link show "vlab2-$name" >/dev/null 2>&1 && die "$name has its second NIC already"
    ip link add "vlab2-$name" type veth peer name eth1 netns "lab-$name"
    ip link set "vlab2-$name" master "$BRIDGE2" up
    ip -n "lab-$name" addr add "$NET2.${ip##*.}/24" dev eth1
    ip -n "lab-$name" link set eth1 up
    ip -n "lab-$name" route replace default via "$NET2.1" dev eth1
    # Nothing is forwarded beyond the bridge: with a default route, a name lookup would wait out
    # every resolver's timeout (apt-get update: 4 minutes) where a host without one fails at once.
    local ns
    for ns in $(awk '$1 == "nameserver" && $2 !~ /^127\./ && $2 !~ /:/ {print $2}' /etc/resolv.conf); do
        ip -n "lab-$name" route replace unreachable "$ns/32"
    done
    log "$name: eth1 $NET2.${ip##*.}/24, default route via $NET2.1"
}

# ---------------------------------------------------------------- status / ssh / exec
cmd_status() {
    check_lab_dir
    if ! read_state; then
        echo "lab is down ($LAB_DIR)"
        return 0
    fi
    if (($(sd_count) == 0)); then
        echo "lab: ${STATE[count]} ${STATE[mode]} hosts, LAB_DIR=$LAB_DIR"
    else
        echo "lab: ${STATE[count]} ${STATE[mode]} hosts + $(sd_count) systemd hosts (s1..s$(sd_count)), LAB_DIR=$LAB_DIR"
    fi
    all_hosts | xargs -P 10 -I{} "$SELF" __status1 {} | sort -V
}
status1() {
    local name=$1 proc=running sshd=down
    main_pid "$name" >/dev/null || proc=gone
    ssh_opts
    if [[ $proc == running ]] && ssh "${SSH_OPTS[@]}" -o ConnectTimeout=3 "$name" true >/dev/null 2>&1; then
        sshd=answers
    fi
    printf '%-5s %-12s host:%-8s sshd:%s\n' "$name" "$(name_ip "$name")" "$proc" "$sshd"
}

cmd_ssh() {
    (($# >= 1)) || die "usage: lab.sh ssh HOST [CMD...]"
    need_up
    local target=$1
    shift
    check_host "$target" >/dev/null
    ssh_opts
    exec ssh "${SSH_OPTS[@]}" "$target" "$@"
}

host_nsenter() { # name cmd...
    local name=$1 ipid
    shift
    ipid=$(init_pid "$name") || die "host $name is not running"
    if is_sd_host "$name"; then
        exec nsenter -t "$ipid" -m -u -i -n -p -C -- "$@"
    fi
    exec nsenter -t "$ipid" -m -u -n -p -- "$@"
}

cmd_exec() {
    (($# >= 2)) || die "usage: lab.sh exec HOST CMD..."
    need_root
    need_up
    local name
    name=$(check_host "$1")
    shift
    host_nsenter "$name" "$@"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/22" 2>/dev/null; }

cmd_stop_sshd() {
    (($# == 1)) || die "usage: lab.sh stop-sshd HOST"
    need_root
    need_up
    local name ip i
    name=$(check_host "$1")
    ip=$(name_ip "$name")
    if is_sd_host "$name"; then
        (host_nsenter "$name" systemctl stop ssh.service)
    else
        # only the listener (PidFile); running sessions stay, like `systemctl stop ssh`
        # shellcheck disable=SC2016
        (host_nsenter "$name" sh -c '[ ! -s /run/sshd.pid ] || kill "$(cat /run/sshd.pid)"; rm -f /run/sshd.pid')
    fi
    for ((i = 0; i < 50; i++)); do
        port_open "$ip" || { log "$name: sshd stopped"; return 0; }
        sleep 0.1
    done
    die "$name: port 22 still open"
}

cmd_start_sshd() {
    (($# == 1)) || die "usage: lab.sh start-sshd HOST"
    need_root
    need_up
    local name out
    name=$(check_host "$1")
    if is_sd_host "$name"; then
        (host_nsenter "$name" systemctl start ssh.service)
    elif ! port_open "$(name_ip "$name")"; then
        (host_nsenter "$name" /usr/sbin/sshd -E /var/log/sshd.log)
    fi
    out=$(wait_ssh "$name" 15) || die "$out"
    log "$name: sshd answers"
}

# ---------------------------------------------------------------- main
main() {
    local cmd=${1:-help}
    (($# == 0)) || shift
    case "$cmd" in
        deps) cmd_deps "$@" ;;
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        add-systemd) cmd_add_systemd "$@" ;;
        remove-systemd) cmd_remove_systemd "$@" ;;
        status) cmd_status "$@" ;;
        ssh) cmd_ssh "$@" ;;
        exec) cmd_exec "$@" ;;
        stop-sshd) cmd_stop_sshd "$@" ;;
        start-sshd) cmd_start_sshd "$@" ;;
        add-nic) cmd_add_nic "$@" ;;
        help | -h | --help) usage ;;
        # internal entry points (run by this script itself)
        __prep) prep_host "$@" ;;
        __hostinit) host_init "$@" ;;
        __sdinit) sd_init "$@" ;;
        __waitssh) wait_ssh "$@" ;;
        __status1) read_state || true; status1 "$@" ;;
        __parse_up) parse_up_args "$@"; echo "mode=$UP_MODE count=$UP_COUNT systemd=$UP_SDCOUNT" ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
