#!/usr/bin/env bash
# bench/run.sh - the side-by-side benchmark of issue 5: our engine, Ansible and pyinfra running the
# same 40-task workload (bench/workload/) on the same fresh lab hosts, and the floor (the same number
# of `ssh HOST true` per host over already-open multiplexed connections, all hosts in parallel).
#
#   bash bench/run.sh                            # 10 and 30 hosts, every tool, median of 3 -> docs/PERFORMANCE.md
#   bash bench/run.sh --hosts 100 --only ours    # 100 light hosts, ours only: time, RSS, connection errors
#
# For each host count it takes the lab down if one is up, brings up a fresh light lab with that many
# hosts (tests/lab/lab.sh), and measures per tool: apply on fresh hosts, the converged re-run and check
# mode on converged hosts (median of --reps; /opt/bench is removed from every host before each apply),
# recording wall time and the controller's peak RSS (/usr/bin/time -v plus a /proc sampler: the
# controller's own peak, ssh processes and helper processes apart). Every run is verified - exit
# status, the tool's own summary (0 failed/unreachable, 0 changed on converged hosts) and a manifest of
# /opt/bench on every host against the expected one - so no tool wins by doing less. Results go to
# bench/results/NNhosts.json; the table is printed and written into docs/PERFORMANCE.md (between markers).
# At the end the lab that was up before is brought back with its size (unless --keep-lab/--no-restore).
#
# Needs: root; the lab's packages (tests/lab/lab.sh deps); cargo; Python 3.11 with venv and, on the
# first run, PyPI (it creates bench/.venv with "ansible-core<2.20" "pyinfra>=3,<4"). It needs the lab
# (and the machine's CPUs) to itself: the lab is taken down and brought up. Expect about an hour for
# the default run on 2 CPUs (Ansible dominates: ~1 min per run at 10 hosts, ~3-4 min at 30).
#
# Options:
#   --hosts LIST        host counts, comma-separated (default 10,30)
#   --only LIST         tools among ours,ansible,pyinfra,floor (default: all four)
#   --reps N            repetitions of each measurement; the median is reported (default 3)
#   --warmup 0|1        one unmeasured apply per tool first (default 1)
#   --use-running-lab   leave the lab alone and use the one that is up (all its hosts, or --limit);
#                       results go to bench/.work/results and docs/PERFORMANCE.md is not written
#   --limit LIST        with --use-running-lab: only these hosts, e.g. h4 (they must not be in use)
#   --keep-lab          leave the last benchmark lab up at the end
#   --no-restore        do not bring back the lab that was up before
#   --no-build          skip `cargo build --release`
#   --no-report         do not write docs/PERFORMANCE.md (the table is printed anyway)
#   --results DIR       where result files go (default bench/results)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
LAB_DIR=${LAB_DIR:-/srv/lab}
LAB=(bash "${BENCH_LAB_SH:-$REPO/tests/lab/lab.sh}") # BENCH_LAB_SH: a stand-in, for testing this script
VENV=$BENCH/.venv
PY=$VENV/bin/python

hosts=10,30 only=ours,ansible,pyinfra,floor reps=3 warmup=1 use_running=0 limit="" keep_lab=0 restore=1
build=1 report=1 results=""
say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --hosts) hosts=${2:?}; shift ;;
        --only) only=${2:?}; shift ;;
        --reps) reps=${2:?}; shift ;;
        --warmup) warmup=${2:?}; shift ;;
        --use-running-lab) use_running=1 ;;
        --limit) limit=${2:?}; shift ;;
        --keep-lab) keep_lab=1 ;;
        --no-restore) restore=0 ;;
        --no-build) build=0 ;;
        --no-report) report=0 ;;
        --results) results=${2:?}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
[[ $hosts =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--hosts wants counts like 10,30"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive number"
[[ -z $limit || $use_running == 1 ]] || die "--limit only goes with --use-running-lab"
[[ $(id -u) -eq 0 ]] || die "must run as root (the lab needs it)"
if ((use_running)); then
    results=${results:-$BENCH/.work/results}
    report=0
else
    results=${results:-$BENCH/results}
fi
mkdir -p "$results"
results=$(cd "$results" && pwd)

# ---------------------------------------------------------------- tools
[[ -x /usr/bin/time ]] || { say "installing /usr/bin/time"; apt-get install -y time >/dev/null; }
if [[ ! -x $PY ]]; then
    python=$(command -v python3.11 || command -v python3) || die "no python3"
    say "creating $VENV with $($python --version)"
    "$python" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
fi
"$PY" -m pip install -q "ansible-core<2.20" "pyinfra>=3,<4"
if ((build)); then
    say "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
fi
[[ -x $REPO/target/release/playbook ]] || die "no $REPO/target/release/playbook"

measure() { # label [extra measure args...]
    local label=$1
    shift
    "$PY" "$BENCH/lib/bench.py" measure --lab-dir "$LAB_DIR" --tools "$only" --reps "$reps" \
        --warmup "$warmup" --work "$BENCH/.work/run-$label" --out "$results/$label.json" "$@"
}

# The lab's lock (the one lab tests take, tests/support/skip.rs): a test run beside the benchmark
# would share its hosts. Held until this script exits.
mkdir -p "$LAB_DIR"
exec 9>"$LAB_DIR/lock"
flock -n 9 || die "the lab is in use by another run (a test run holds $LAB_DIR/lock)"

status=0
if ((use_running)); then
    [[ -f $LAB_DIR/state ]] || die "no lab is up ($LAB_DIR/state is missing)"
    n=$(sed -n 's/^count=//p' "$LAB_DIR/state")
    if [[ -n $limit ]]; then
        label=running-$(tr ',' '-' <<<"$limit")
        measure "$label" --limit "$limit" || status=1
    else
        measure "${n}hosts-running" || status=1
    fi
else
    # The lab that is up now, to bring back at the end.
    prev_mode="" prev_count=""
    if [[ -f $LAB_DIR/state ]]; then
        prev_mode=$(sed -n 's/^mode=//p' "$LAB_DIR/state")
        prev_count=$(sed -n 's/^count=//p' "$LAB_DIR/state")
    fi
    changed_lab=0
    # shellcheck disable=SC2317  # (called by the EXIT trap)
    finish() {
        local rc=$?
        trap - EXIT INT TERM
        if ((changed_lab)) && ((!keep_lab)); then
            say "taking the benchmark lab down"
            "${LAB[@]}" down >/dev/null || true
            if ((restore)) && [[ -n $prev_count ]]; then
                say "bringing back the lab that was up before: $prev_count $prev_mode hosts"
                "${LAB[@]}" up "--$prev_mode" "$prev_count" >/dev/null || say "could not bring the lab back"
            fi
        fi
        exit "$rc"
    }
    trap finish EXIT
    trap 'exit 130' INT TERM
    for n in ${hosts//,/ }; do
        if [[ -f $LAB_DIR/state ]]; then
            say "taking the running lab down"
            changed_lab=1
            "${LAB[@]}" down >/dev/null
        fi
        say "bringing up $n light hosts"
        changed_lab=1
        "${LAB[@]}" up --light "$n" >/dev/null
        measure "${n}hosts" || status=1
    done
fi

# ---------------------------------------------------------------- report
if ((report)); then
    "$PY" "$BENCH/lib/bench.py" report --results "$results" --write "$REPO/docs/PERFORMANCE.md"
else
    "$PY" "$BENCH/lib/bench.py" report --results "$results"
fi
((status == 0)) || say "some runs failed verification: see the Problems in the report and bench/.work/run-*/logs"
exit $status
