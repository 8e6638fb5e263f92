#!/usr/bin/env bash
# tests/lab/lab.sh - a multi-host SSH test lab on one Linux machine (see README.md).
#
#   lab.sh deps                      install the Debian packages the lab needs
#   lab.sh up [--systemd] N          start hosts h1..hN (LAB_SYSTEMD=1 = --systemd)
#   lab.sh down [--purge]            remove everything `up` made
#   lab.sh status                    list hosts, IPs and whether sshd answers
#   lab.sh ssh HOST [CMD...]         ssh to HOST (h3 or deploy@h3) with the lab key
#   lab.sh exec HOST CMD...          run CMD inside HOST's namespaces (nsenter, no ssh)
#   lab.sh stop-sshd HOST | start-sshd HOST
#
# Network: only the private bridge labbr0 (10.77.0.1/24) that this script creates; hosts get
# 10.77.0.(10+i) and have no default route; nothing is forwarded anywhere else.
set -euo pipefail

LAB_DIR=${LAB_DIR:-/srv/lab}
LAB_DIR=${LAB_DIR%/}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
BRIDGE=labbr0
NET=10.77.0
GATEWAY=10.77.0.1
OVDIRS=(etc var opt usr home)
MAX_HOSTS=100
DEPS=(openssh-server openssh-client tini iproute2 procps sudo systemd-container attr openssl util-linux dnf rpm createrepo-c dpkg-dev)
export LAB_DIR

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,13p' "$SELF" | sed 's/^# \{0,1\}//'
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
# HOST may be hN or user@hN; prints hN
check_host() {
    local h=${1#*@}
    [[ $h =~ ^h([1-9][0-9]*)$ ]] || die "bad host name '$1' (want h1..h${STATE[count]:-N})"
    ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] <= STATE[count])) || die "no host $h (lab has h1..h${STATE[count]})"
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
build_template() {
    local mode=$1 count=$2 hash=$3 T=$LAB_DIR/hosts/.tpl
    local pub uid gid f i day
    pub=$(<"$LAB_DIR/keys/id_lab.pub")
    rm -rf "$T"
    mkdir -p "$T/etc/ssh/sshd_config.d" "$T/etc/sudoers.d" "$T/home" "$T/root"

    # deploy user: copies of the machine's user databases without any old deploy entry
    uid=2000
    while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; do uid=$((uid + 1)); done
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
    {
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
        printf '%s\tlabgw\n' "$GATEWAY"
        for ((i = 1; i <= count; i++)); do printf '%s\th%d\n' "$(host_ip "$i")" "$i"; done
    } >"$T/etc/hosts"

    if [[ $mode == systemd ]]; then
        printf '# lab: no mounts\n' >"$T/etc/fstab"
        # only ssh.service stays enabled from /etc (the lower root is a dev box)
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

# per host: overlay upper dirs seeded from the template + own host key, sshd config, hostname
prep_host() {
    local mode=$1 i=$2 name="h$2" S ip E T=$LAB_DIR/hosts/.tpl d
    S=$(host_dir "$name")
    ip=$(host_ip "$i")
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
    exec env SYSTEMD_NSPAWN_API_VFS_WRITABLE=network systemd-nspawn -D "$S/rootfs" -M "$name" -b \
        --register=no --keep-unit --console=passive --network-namespace-path="/run/netns/lab-$name" \
        --capability=CAP_NET_ADMIN --bind="$LAB_DIR/shared"
}

SSH_OPTS=()
ssh_opts() { SSH_OPTS=(-F "$LAB_DIR/ssh_config" -o ConnectTimeout=5); }

# wait until hN's sshd accepts a real ssh login (strict host key checking) and says its name
wait_ssh() {
    local name=$1 timeout=$2 ip out err deadline
    ip=$(host_ip "${name#h}")
    deadline=$((SECONDS + timeout))
    ssh_opts
    while ((SECONDS < deadline)); do
        if ! main_pid "$name" >/dev/null; then
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

write_client_files() {
    local count=$1 i name ip
    {
        for ((i = 1; i <= count; i++)); do
            name=h$i
            ip=$(host_ip "$i")
            printf '%s,%s %s\n' "$name" "$ip" "$(cut -d' ' -f1-2 "$(host_dir "$name")/host_ed25519.pub")"
        done
    } >"$LAB_DIR/known_hosts"
    {
        echo "# generated by tests/lab/lab.sh"
        for ((i = 1; i <= count; i++)); do
            cat <<EOF
Host h$i
    HostName $(host_ip "$i")
    User root
    Port 22
    IdentityFile $LAB_DIR/keys/id_lab
    IdentitiesOnly yes
    UserKnownHostsFile $LAB_DIR/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes

EOF
        done
    } >"$LAB_DIR/ssh_config"
    {
        echo "# generated by tests/lab/lab.sh"
        echo "[defaults]"
        echo 'connection = "ssh"'
        echo 'user = "root"'
        echo 'port = 22'
        echo "identity_file = \"$LAB_DIR/keys/id_lab\""
        echo "known_hosts = \"$LAB_DIR/known_hosts\""
        echo
        for ((i = 1; i <= count; i++)); do
            printf '[hosts.h%d]\naddress = "%s"\n\n' "$i" "$(host_ip "$i")"
        done
        printf '[groups.lab]\nhosts = ['
        for ((i = 1; i <= count; i++)); do
            ((i == 1)) || printf ', '
            printf '"h%d"' "$i"
        done
        printf ']\n'
    } >"$LAB_DIR/inventory.toml"
}

cmd_up() {
    local mode=light count="" a
    [[ ${LAB_SYSTEMD:-0} == 1 ]] && mode=systemd
    for a in "$@"; do
        case "$a" in
            --systemd) mode=systemd ;;
            --light) mode=light ;;
            *) [[ -z $count ]] || die "usage: lab.sh up [--systemd] N"; count=$a ;;
        esac
    done
    [[ $count =~ ^[1-9][0-9]*$ ]] || die "usage: lab.sh up [--systemd] N   (N = 1..$MAX_HOSTS)"
    ((count <= MAX_HOSTS)) || die "at most $MAX_HOSTS hosts"
    need_root
    check_lab_dir
    check_tools "$mode"
    if read_state; then
        die "lab is already up (${STATE[count]} ${STATE[mode]} hosts in $LAB_DIR); run: lab.sh down"
    fi
    if [[ -d $LAB_DIR/hosts ]] || ip netns list 2>/dev/null | grep -q '^lab-h[0-9]'; then
        log "cleaning up leftovers of an earlier run"
        cmd_down >/dev/null
    fi
    [[ $mode == light ]] || ((count <= 30)) || log "warning: $count systemd hosts need ~17 MB RAM each and boot slowly"

    local t0=$SECONDS i name jobs pw hash netns_mounted=0 inotify_old=""
    local start_ns
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
    local nspawn_dir=0
    [[ ! -d /run/systemd/nspawn ]] || nspawn_dir=1
    if [[ $mode == systemd ]]; then
        inotify_old=$(cat /proc/sys/fs/inotify/max_user_instances)
        if ((inotify_old < 1024)); then
            log "raising fs.inotify.max_user_instances $inotify_old -> 1024 (restored by down)"
            echo 1024 >/proc/sys/fs/inotify/max_user_instances
        else
            inotify_old=""
        fi
    fi
    printf 'mode=%s\ncount=%s\nnetns_premounted=%s\ninotify_old=%s\nnspawn_dir_existed=%s\n' \
        "$mode" "$count" "$netns_mounted" "$inotify_old" "$nspawn_dir" >"$LAB_DIR/state"
    STATE=([mode]=$mode [count]=$count)

    local rc=0
    up_inner "$mode" "$count" "$hash" || rc=$?
    if ((rc != 0)); then
        if [[ ${LAB_KEEP_ON_FAILURE:-0} == 1 ]]; then
            log "up FAILED; lab left as is (LAB_KEEP_ON_FAILURE=1); clean up with: lab.sh down"
        else
            log "up FAILED; tearing down (set LAB_KEEP_ON_FAILURE=1 to keep it for debugging)"
            cmd_down >/dev/null || true
        fi
        exit 1
    fi
    local ms=$((($(date +%s%N) - start_ns) / 1000000))
    log "$count $mode hosts up in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s ($((SECONDS - t0))s): h1=$(host_ip 1) .. h$count=$(host_ip "$count")"
    log "inventory: $LAB_DIR/inventory.toml   ssh: ssh -F $LAB_DIR/ssh_config h1"
}

up_inner() {
    local mode=$1 count=$2 hash=$3 i name jobs fails timeout
    jobs=$(($(nproc) * 2))
    build_template "$mode" "$count" "$hash"

    # bridge + all netns/veths in one ip process
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    {
        for ((i = 1; i <= count; i++)); do
            echo "netns add lab-h$i"
            echo "link add vlab-h$i type veth peer name eth0 netns lab-h$i"
            echo "link set vlab-h$i master $BRIDGE up"
        done
    } | ip -batch - || { log "creating network namespaces failed"; return 1; }

    seq 1 "$count" | xargs -P "$jobs" -I{} "$SELF" __prep "$mode" {} ||
        { log "preparing hosts failed"; return 1; }
    for ((i = 1; i <= count; i++)); do
        cp "$(host_dir "h$i")/$([[ $mode == light ]] && echo ov/etc/upper || echo upper/etc)/ssh/ssh_host_ed25519_key.pub" \
            "$(host_dir "h$i")/host_ed25519.pub"
    done
    write_client_files "$count"
    rm -rf "$LAB_DIR/hosts/.tpl"

    for ((i = 1; i <= count; i++)); do launch_host "$mode" "h$i"; done

    if [[ $mode == light ]]; then timeout=$((30 + count / 2)); else timeout=$((60 + count * 2)); fi
    timeout=${LAB_TIMEOUT:-$timeout}
    fails=$(seq 1 "$count" | xargs -P 10 -I{} "$SELF" __waitssh h{} "$timeout" || true)
    if [[ -n $fails ]]; then
        log "these hosts did not come up:"
        printf '%s\n' "$fails" | sort -V >&2
        local n
        for n in $(printf '%s\n' "$fails" | awk '{print $1}' | tr -d ':' | sort -u | head -3); do
            [[ $n =~ ^h[0-9]+$ ]] || continue
            log "--- $n console.log (tail)"
            tail -n 15 "$(host_dir "$n")/console.log" >&2 2>/dev/null || true
        done
        return 1
    fi
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
    local d name pid ipid pids=() inits=() sdpids=() left
    for d in "$LAB_DIR"/hosts/h*; do
        [[ -d $d ]] || continue
        name=${d##*/}
        [[ $name =~ ^h[0-9]+$ ]] || continue
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
    local cg p
    for cg in /sys/fs/cgroup/systemd/lab-h* /sys/fs/cgroup/unified/lab-h*; do
        [[ -d $cg ]] || continue
        while read -r p; do
            if [[ $p =~ ^[0-9]+$ ]] && alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
        done < <(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done

    # network
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^lab-h[0-9]+$' || true); do
        ip netns del "$ns" 2>/dev/null || log "WARNING: could not delete netns $ns"
    done
    for a in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^vlab-h[0-9]+$' || true); do
        ip link del "$a" 2>/dev/null || true
    done
    ! ip link show "$BRIDGE" >/dev/null 2>&1 || ip link del "$BRIDGE"
    if [[ ${STATE[netns_premounted]:-1} == 0 ]] && mountpoint -q /run/netns 2>/dev/null &&
        [[ -z $(ip netns list 2>/dev/null) ]]; then
        umount /run/netns 2>/dev/null || true
        rmdir /run/netns 2>/dev/null || true
    fi

    # cgroups, depth first
    for cg in /sys/fs/cgroup/*/lab-h*; do
        [[ -d $cg ]] || continue
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ ! -d $cg ]] || sleep 0.5
        [[ ! -d $cg ]] || find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null ||
            log "WARNING: could not remove cgroup $cg"
    done
    # systemd-nspawn leftovers (/run is not a tmpfs on this machine)
    if [[ -d /run/systemd/nspawn ]]; then
        for d in "$LAB_DIR"/hosts/h*/nspawn_lock; do
            [[ -f $d ]] || continue
            a=$(<"$d")
            if [[ $a =~ ^inode-[0-9]+:[0-9]+$ ]]; then rm -f "/run/systemd/nspawn/locks/$a"; fi
        done
        for d in /run/systemd/nspawn/propagate/h* /run/systemd/nspawn/unix-export/h*; do
            [[ -e $d && ${d##*/} =~ ^h[0-9]+$ ]] || continue
            awk -v d="$d" '$5 == d || index($5, d "/") == 1 {f=1} END {exit !f}' /proc/self/mountinfo ||
                rm -rf --one-file-system "$d"
        done
    fi
    if [[ ${STATE[mode]:-} == systemd && ${STATE[nspawn_dir_existed]:-1} == 0 ]]; then
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
            "$LAB_DIR/become_password"
        if ((purge == 1)) && [[ -f $LAB_DIR/.lab ]]; then
            rm -rf --one-file-system "$LAB_DIR"
        fi
    fi
    log "down: lab removed"
}

# ---------------------------------------------------------------- status / ssh / exec
cmd_status() {
    check_lab_dir
    if ! read_state; then
        echo "lab is down ($LAB_DIR)"
        return 0
    fi
    echo "lab: ${STATE[count]} ${STATE[mode]} hosts, LAB_DIR=$LAB_DIR"
    seq 1 "${STATE[count]}" | xargs -P 10 -I{} "$SELF" __status1 h{} | sort -V
}
status1() {
    local name=$1 proc=running sshd=down
    main_pid "$name" >/dev/null || proc=gone
    ssh_opts
    if [[ $proc == running ]] && ssh "${SSH_OPTS[@]}" -o ConnectTimeout=3 "$name" true >/dev/null 2>&1; then
        sshd=answers
    fi
    printf '%-5s %-12s host:%-8s sshd:%s\n' "$name" "$(host_ip "${name#h}")" "$proc" "$sshd"
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
    if [[ ${STATE[mode]} == systemd ]]; then
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
    ip=$(host_ip "${name#h}")
    if [[ ${STATE[mode]} == systemd ]]; then
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
    if [[ ${STATE[mode]} == systemd ]]; then
        (host_nsenter "$name" systemctl start ssh.service)
    elif ! port_open "$(host_ip "${name#h}")"; then
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
        status) cmd_status "$@" ;;
        ssh) cmd_ssh "$@" ;;
        exec) cmd_exec "$@" ;;
        stop-sshd) cmd_stop_sshd "$@" ;;
        start-sshd) cmd_start_sshd "$@" ;;
        help | -h | --help) usage ;;
        # internal entry points (run by this script itself)
        __prep) prep_host "$@" ;;
        __hostinit) host_init "$@" ;;
        __sdinit) sd_init "$@" ;;
        __waitssh) wait_ssh "$@" ;;
        __status1) read_state || true; status1 "$@" ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
