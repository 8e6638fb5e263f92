#!/usr/bin/env bash
# bench/output.sh - the controller's memory when a command prints a lot (issue 13: "command output is
# bounded"). Runs the engine over the local connection, one host, and measures its peak RSS with
# /usr/bin/time -v for:
#
#   peer         a command that prints nothing (the controller's own footprint, measured in this run)
#   unregistered a command printing 50 MB
#   registered   the same, registered
#   template     the same, registered and then used in a template (copied into a file)
#
# each at the default --keep-output (1M) and, to show what the bound is worth, at --keep-output 64M
# (which keeps the whole 50 MB). It prints a table of peaks and their ratio to the peer, and checks
# the issue's bar: under 100 MB for every 50 MB case at the default. No timing is asserted anywhere.
#
#   bash bench/output.sh                 # release build (cargo build --release first)
#   bash bench/output.sh --bin PATH      # another binary
#   bash bench/output.sh --mb 50         # bytes printed, in MB
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
BIN="$REPO/target/release/playbook"
MB=50
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --mb) MB=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done
[ -x "$BIN" ] || (cd "$REPO" && cargo build --release -q)
BIN=$(realpath "$BIN")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
printf '[defaults]\nconnection = "local"\n\n[hosts.a]\n' > inventory.toml
# 100-byte lines, as a verbose command prints them (stdout_lines then has MB*10000 entries).
PRINT="head -c ${MB}000000 /dev/zero | tr '\\\\0' x | fold -w 100"
cat > peer.rhai <<EOF
on("a", shell(#{ cmd: "true" }));
EOF
cat > unregistered.rhai <<EOF
on("a", shell(#{ cmd: "$PRINT" }));
EOF
cat > registered.rhai <<EOF
on("a", shell(#{ cmd: "$PRINT" }).register("big"));
on("a", shell(#{ cmd: "true" }));
EOF
cat > template.rhai <<EOF
on("a", shell(#{ cmd: "$PRINT" }).register("big"));
on("a", copy(#{ dest: "$WORK/copy", content: "{{ big.stdout }}" }));
EOF

# Peak RSS in MB of one run; the run must succeed.
peak() {
    local kb
    /usr/bin/time -v "$BIN" run "$1.rhai" -i inventory.toml "${@:2}" > run.log 2> time.log ||
        { cat run.log time.log >&2; echo "bench/output.sh: $1 failed" >&2; exit 1; }
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' time.log)
    echo $((kb / 1024))
}

over=0
printf '%-14s %-14s %10s %8s\n' case keep-output "peak MB" "x peer"
for keep in 1M 64M; do
    base=$(peak peer --keep-output "$keep")
    printf '%-14s %-14s %10s %8s\n' peer "$keep" "$base" 1.0
    for case in unregistered registered template; do
        mb=$(peak "$case" --keep-output "$keep")
        ratio=$(awk -v a="$mb" -v b="$base" 'BEGIN { printf "%.1f", a / b }')
        printf '%-14s %-14s %10s %8s\n' "$case" "$keep" "$mb" "$ratio"
        if [ "$keep" = 1M ] && [ "$mb" -ge 100 ]; then over=1; fi
    done
done
if [ $over = 1 ]; then
    echo "bench/output.sh: a ${MB} MB case used 100 MB or more at the default --keep-output" >&2
    exit 1
fi
