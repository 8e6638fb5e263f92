#!/usr/bin/env bash
# The floor of the benchmark: trivial remote commands over already-open multiplexed SSH connections.
#
#   floor.sh open  SSH_CONFIG CTLDIR 0 HOST...   open one persisted ControlMaster per host (in parallel)
#   floor.sh run   SSH_CONFIG CTLDIR T HOST...   per host T x `ssh HOST true` in sequence, all hosts at once
#   floor.sh close SSH_CONFIG CTLDIR 0 HOST...   close the masters
#
# SSH_CONFIG is the lab's ssh_config (host keys checked against the lab's known_hosts).
set -euo pipefail
action=$1 cfg=$2 ctl=$3 count=$4
shift 4
mux=(-F "$cfg" -o "ControlPath=$ctl/%n")
pids=()
case $action in
    open)
        for h in "$@"; do
            ssh "${mux[@]}" -o ControlMaster=yes -o ControlPersist=yes -f -N "$h" &
            pids+=($!)
        done ;;
    run)
        for h in "$@"; do
            (for ((i = 0; i < count; i++)); do ssh "${mux[@]}" -o ControlMaster=no "$h" true; done) &
            pids+=($!)
        done ;;
    close)
        for h in "$@"; do
            ssh "${mux[@]}" -O exit "$h" 2>/dev/null &
            pids+=($!)
        done ;;
    *) echo "floor.sh: unknown action $action" >&2; exit 2 ;;
esac
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
