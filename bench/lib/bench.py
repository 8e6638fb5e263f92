"""The benchmark driver behind bench/run.sh (issue 5). Run with bench/.venv/bin/python.

    bench.py measure --lab-dir /srv/lab --out results/10hosts.json [--limit h4] [--tools ...] [--reps 3]
    bench.py report --results bench/results [--write docs/PERFORMANCE.md]

`measure` uses the lab as it is (run.sh brings it up): it generates the three inventories, and for
each tool measures apply on fresh hosts, the converged re-run and check mode on converged hosts
(median of --reps), and the floor; it verifies every run (exit status, the tool's own change and
failure counts, a manifest of /opt/bench on every host against the expected one) and records the
controller's peak RSS. `report` turns result files into the tables of docs/PERFORMANCE.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inventory  # noqa: E402
import manifest  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
WORKLOAD = BENCH / "workload"
VENV = BENCH / ".venv"
TOOLS = ["ours", "ansible", "pyinfra", "floor"]
MODES = ["apply", "rerun", "check"]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes and memory

def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Name", "VmRSS", "VmHWM", "PPid"):
                    out[k] = v.strip()
    except OSError:
        pass
    return out


def kb(v: str | None) -> int:
    return int(v.split()[0]) if v else 0


def children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


class Sampler(threading.Thread):
    """Samples a process tree every `interval` s: the controller's own peak (VmHWM), and the peak
    summed RSS of its ssh processes and of its other helper processes (e.g. Ansible's forks).
    `marker`: also count ssh processes anywhere whose command line contains it (ssh masters that
    daemonized out of the tree, as Ansible's ControlPersist masters do)."""

    def __init__(self, wrapper_pid: int, marker: str | None, interval: float = 0.1):
        super().__init__(daemon=True)
        self.wrapper, self.marker, self.interval = wrapper_pid, marker, interval
        self.stop = threading.Event()
        self.main_hwm = self.ssh_peak = self.ssh_count = self.others_peak = self.tree_peak = 0
        self.samples = 0

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def sample(self):
        kids = children(self.wrapper)
        if not kids:
            return
        main = kids[0]
        st = proc_status(main)
        self.main_hwm = max(self.main_hwm, kb(st.get("VmHWM")))
        main_rss = kb(st.get("VmRSS"))
        seen, ssh_sum, ssh_n, other_sum = {main}, 0, 0, 0
        stack = children(main)
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            s = proc_status(p)
            if s.get("Name") == "ssh":
                ssh_sum += kb(s.get("VmRSS"))
                ssh_n += 1
            else:
                other_sum += kb(s.get("VmRSS"))
            stack += children(p)
        if self.marker:
            for d in os.listdir("/proc"):
                if not d.isdigit() or int(d) in seen:
                    continue
                try:
                    with open(f"/proc/{d}/comm") as f:
                        if f.read().strip() != "ssh":
                            continue
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if self.marker.encode() not in f.read():
                            continue
                except OSError:
                    continue
                ssh_sum += kb(proc_status(int(d)).get("VmRSS"))
                ssh_n += 1
        self.samples += 1
        self.ssh_peak = max(self.ssh_peak, ssh_sum)
        self.ssh_count = max(self.ssh_count, ssh_n)
        self.others_peak = max(self.others_peak, other_sum)
        self.tree_peak = max(self.tree_peak, main_rss + ssh_sum + other_sum)


def timed(cmd: list[str], cwd: Path, env: dict, logbase: Path, marker: str | None = None) -> dict:
    """Runs cmd under /usr/bin/time -v; wall seconds measured here, RSS from time -v and the sampler."""
    tfile = logbase.with_suffix(".time")
    with open(logbase.with_suffix(".out"), "wb") as out, open(logbase.with_suffix(".err"), "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(tfile), *cmd], cwd=cwd, env=env,
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        s = Sampler(p.pid, marker, 0.25 if marker else 0.1)
        s.start()
        rc = p.wait()
        seconds = time.monotonic() - t0
        s.stop.set()
        s.join()
    tv = {}
    for line in tfile.read_text().splitlines() if tfile.exists() else []:
        k, _, v = line.strip().rpartition(": ")
        tv[k] = v
    return {
        "seconds": round(seconds, 3),
        "rc": rc,
        "maxrss_kb": int(tv.get("Maximum resident set size (kbytes)", 0) or 0),
        "user_s": float(tv.get("User time (seconds)", 0) or 0),
        "sys_s": float(tv.get("System time (seconds)", 0) or 0),
        "main_hwm_kb": s.main_hwm,
        "ssh_peak_kb": s.ssh_peak,
        "ssh_procs": s.ssh_count,
        "others_peak_kb": s.others_peak,
        "tree_peak_kb": s.tree_peak,
        "rss_samples": s.samples,
        "log": str(logbase.with_suffix(".out").relative_to(REPO)) if logbase.is_relative_to(REPO) else str(logbase),
    }


# ------------------------------------------------------------------ tool output parsing

def parse_ours(stdout: str) -> dict:
    recap = None
    for line in stdout.splitlines():
        if line.startswith("{") and '"recap"' in line:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "recap":
                recap = ev
    if recap is None:
        return {"parsed": False}
    t = {k: 0 for k in ("ok", "changed", "failed", "skipped", "unreachable")}
    for h in recap["hosts"].values():
        for k in t:
            t[k] += int(h.get(k, 0))
    return {"parsed": True, "hosts_seen": len(recap["hosts"]), **t}


ANSIBLE_RECAP = re.compile(
    r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", re.M)


def parse_ansible(stdout: str) -> dict:
    rows = ANSIBLE_RECAP.findall(ANSI.sub("", stdout.split("PLAY RECAP")[-1]))
    if not rows:
        return {"parsed": False}
    t = {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0}
    for _, ok, ch, un, fa, sk in rows:
        t["ok"] += int(ok); t["changed"] += int(ch); t["unreachable"] += int(un)
        t["failed"] += int(fa); t["skipped"] += int(sk)
    return {"parsed": True, "hosts_seen": len(rows), **t}


def parse_pyinfra(out: str) -> dict:
    out = ANSI.sub("", out)
    # pyinfra pads the host names to one width: "[h5]  Connected", "[h10] Connected".
    connected = len(re.findall(r"^\s+\[[^\]]+\]\s+Connected", out, re.M))
    unreachable = len(re.findall(r"Could not connect|Failed to connect|Connection refused", out))
    m = re.search(r"^\s+Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", out, re.M)
    if m:
        n = [0 if x == "-" else int(x) for x in m.groups()]
        return {"parsed": True, "hosts_seen": connected, "ops": n[0], "changed": n[1], "failed": n[2],
                "ok": n[3], "unreachable": unreachable}
    if "--> Detected changes:" in out:  # --dry: "N (hosts)" per operation in Change / Conditional Change
        table = out.split("--> Detected changes:")[-1].split("\n\n")[0]
        changed = sum(int(x) for x in re.findall(r"(?<!\S)(\d+) \(", "\n".join(table.splitlines()[2:])))
        return {"parsed": True, "hosts_seen": connected, "changed": changed, "failed": 0,
                "unreachable": unreachable}
    return {"parsed": False, "unreachable": unreachable}


# ------------------------------------------------------------------ the benchmark

class Bench:
    def __init__(self, a):
        self.a = a
        self.lab = Path(a.lab_dir).resolve()
        self.work = Path(a.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        self.hosts = inventory.write_all(self.lab, self.work, a.limit.split(",") if a.limit else None)
        if not self.hosts:
            raise SystemExit("bench: no hosts")
        self.n = len(self.hosts)
        self.want = {}
        for h in self.hosts:
            uid, gid = manifest.passwd_ids(self.lab, h["name"])
            self.want[h["name"]] = manifest.expected(h, uid, gid)
        self.problems: list[str] = []
        self.env = dict(os.environ)
        self.env.pop("ANSIBLE_CONFIG", None)
        self.env["ANSIBLE_CONFIG"] = str(self.work / "ansible" / "ansible.cfg")
        self.env["ANSIBLE_FORCE_COLOR"] = "0"
        self.env["NO_COLOR"] = "1"
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PATH"] = f"{VENV / 'bin'}:{self.env.get('PATH', '')}"

    # ---- hosts
    def clean(self):
        """Removes /opt/bench on every host, all at once, inside the hosts (nsenter: no ssh)."""
        lab_sh = os.environ.get("BENCH_LAB_SH") or str(REPO / "tests/lab/lab.sh")
        procs = [subprocess.Popen(["bash", lab_sh, "exec", h["name"], "rm", "-rf",
                                   manifest.ROOT], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for h in self.hosts]
        for h, p in zip(self.hosts, procs):
            _, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"bench: cleaning {h['name']} failed: {err.decode().strip()}")
        for h in self.hosts:
            have, _ = manifest.actual(manifest.upper_dir(self.lab, h["name"]))
            if have:
                raise SystemExit(f"bench: {manifest.ROOT} still present on {h['name']} after cleaning")

    def snapshot(self) -> dict:
        return {h["name"]: manifest.actual(manifest.upper_dir(self.lab, h["name"])) for h in self.hosts}

    def verify_files(self, snap: dict) -> list[str]:
        bad = []
        for name, (have, _) in snap.items():
            d = manifest.diff(self.want[name], have)
            if d:
                bad.append(f"{name}: " + "; ".join(d))
        return bad

    # ---- tools
    def command(self, tool: str, mode: str) -> tuple[list[str], Path, str | None]:
        check = mode == "check"
        if tool == "ours":
            cmd = [str(self.a.playbook), "run", str(WORKLOAD / "site.rhai"), "-i", str(self.work / "ours.toml"),
                   "--output", "json", "--forks", str(self.n)]
            return cmd + (["--check"] if check else []), REPO, None
        if tool == "ansible":
            cmd = [str(VENV / "bin/ansible-playbook"), "site.yml"]
            return cmd + (["--check"] if check else []), WORKLOAD, str(self.work / "ansible" / "cp")
        if tool == "pyinfra":
            cmd = [str(VENV / "bin/pyinfra"), str(self.work / "pyinfra_inventory.py"), "deploy.py",
                   "--parallel", str(self.n)]
            # -y: run without the change-detection pass and prompt; --dry: detect changes only.
            return cmd + (["--dry"] if check else ["-y"]), WORKLOAD, None
        raise ValueError(tool)

    def close_ansible_masters(self):
        """Ansible leaves ControlPersist masters behind; every measured run starts without open
        connections (as ours and pyinfra do), so they are closed after each Ansible run."""
        cp = self.work / "ansible" / "cp"
        for sock in cp.iterdir() if cp.is_dir() else []:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench-ansible"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)

    def run_tool(self, tool: str, mode: str, rep: int | str) -> dict:
        cmd, cwd, marker = self.command(tool, mode)
        before = self.snapshot() if mode != "apply" else None
        logbase = self.work / "logs" / f"{tool}-{mode}-{rep}"
        r = timed(cmd, cwd, self.env, logbase, marker)
        if tool == "ansible":
            self.close_ansible_masters()
        out = logbase.with_suffix(".out").read_text(errors="replace")
        err = logbase.with_suffix(".err").read_text(errors="replace")
        counts = {"ours": parse_ours, "ansible": parse_ansible, "pyinfra": parse_pyinfra}[tool](
            out + ("\n" + err if tool == "pyinfra" else ""))
        r["counts"] = counts
        r["stderr_tail"] = err.strip().splitlines()[-5:]
        r["connection_errors"] = len(re.findall(r"(?i)connection (refused|reset|closed|timed out)|"
                                                r"could not connect|unreachable=[1-9]|host key", out + err))
        after = self.snapshot()
        problems = []
        if r["rc"] != 0:
            problems.append(f"exit status {r['rc']}")
        if not counts.get("parsed"):
            problems.append("could not parse the tool's summary")
        else:
            if counts.get("failed") or counts.get("unreachable"):
                problems.append(f"failed={counts.get('failed')} unreachable={counts.get('unreachable')}")
            if counts.get("hosts_seen") != self.n:
                problems.append(f"{counts.get('hosts_seen')} hosts in the summary, want {self.n}")
            if mode in ("rerun", "check") and counts.get("changed") != 0:
                problems.append(f"changed={counts.get('changed')} on converged hosts, want 0")
            if mode == "apply" and not counts.get("changed"):
                problems.append("apply on fresh hosts reported no change")
        problems += self.verify_files(after)
        if before is not None:
            r["rewritten"] = sum(1 for name, (_, st) in after.items() for p, s in st.items()
                                 if before[name][1].get(p) != s)
            if r["rewritten"]:
                problems.append(f"{r['rewritten']} files modified on disk (content or attributes) on converged hosts")
        r["verified"] = not problems
        r["problems"] = problems
        c = counts
        log(f"{tool:8} {mode:6} {rep}: {r['seconds']:8.2f} s  rc={r['rc']} changed={c.get('changed')} "
            f"failed={c.get('failed')} unreachable={c.get('unreachable')}  rss={r['main_hwm_kb'] // 1024} MB "
            f"(ssh {r['ssh_peak_kb'] // 1024} MB/{r['ssh_procs']})  {'ok' if not problems else 'PROBLEM: ' + ' | '.join(problems)}")
        if problems:
            self.problems.append(f"{tool} {mode} {rep}: " + " | ".join(problems))
        return r

    def floor(self, rep: int | str) -> dict:
        ctl = self.work / "floor"
        ctl.mkdir(exist_ok=True)
        names = [h["name"] for h in self.hosts]
        cfg = str(self.lab / "ssh_config")
        sh = str(BENCH / "lib" / "floor.sh")
        subprocess.run(["bash", sh, "open", cfg, str(ctl), "0", *names], check=True)
        try:
            r = timed(["bash", sh, "run", cfg, str(ctl), str(manifest.TASKS_PER_HOST), *names], REPO, self.env,
                      self.work / "logs" / f"floor-{rep}")
        finally:
            subprocess.run(["bash", sh, "close", cfg, str(ctl), "0", *names])
        r["verified"] = r["rc"] == 0
        r["problems"] = [] if r["verified"] else [f"exit status {r['rc']}"]
        log(f"floor    {manifest.TASKS_PER_HOST}x true {rep}: {r['seconds']:8.2f} s  rc={r['rc']}")
        if not r["verified"]:
            self.problems.append(f"floor {rep}: exit status {r['rc']}")
        return r

    def measure(self) -> dict:
        a = self.a
        tools = a.tools.split(",")
        res = {
            "hosts": self.n,
            "host_names": [h["name"] for h in self.hosts],
            "tasks_per_host": manifest.TASKS_PER_HOST,
            "reps": a.reps,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "versions": versions(a.playbook),
            "settings": settings(self.n),
            "tools": {},
        }
        log(f"{self.n} hosts ({', '.join(res['host_names'][:5])}{', ...' if self.n > 5 else ''}), tools {tools}, "
            f"{a.reps} repetitions")
        t_all = time.monotonic()
        for tool in tools:
            if tool == "floor":
                if a.warmup:
                    self.floor("warmup")
                res["tools"]["floor"] = {"floor": [self.floor(i + 1) for i in range(a.reps)]}
                continue
            runs = {m: [] for m in MODES}
            if a.warmup:
                self.clean()
                self.run_tool(tool, "apply", "warmup")
            for i in range(a.reps):
                self.clean()
                runs["apply"].append(self.run_tool(tool, "apply", i + 1))
            for mode in ("rerun", "check"):
                for i in range(a.reps):
                    runs[mode].append(self.run_tool(tool, mode, i + 1))
            res["tools"][tool] = runs
        if a.clean_after:
            self.clean()
        res["duration_s"] = round(time.monotonic() - t_all, 1)
        res["problems"] = self.problems
        return res


# ------------------------------------------------------------------ machine, versions, settings

def run_out(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1])
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    osr = "?"
    if Path("/etc/os-release").exists():
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        osr = m.group(1) if m else "?"
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / 1024 / 1024, 1), "kernel": platform.release(),
            "os": osr, "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


def versions(playbook: Path) -> dict:
    rev = run_out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run_out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    import importlib.metadata as md
    v = {
        "playbook": f"{run_out([str(playbook), '--version'])} (git {rev}{', with uncommitted changes' if dirty else ''})",
        "ansible-core": md.version("ansible-core"),
        "pyinfra": md.version("pyinfra"),
        "paramiko": md.version("paramiko"),
        "jinja2": md.version("jinja2"),
        "python (controller venv)": platform.python_version(),
        "openssh": run_out(["ssh", "-V"]),
    }
    return v


def settings(n: int) -> dict:
    return {
        "ours": f"playbook run --forks {n} --output json; one OpenSSH ControlMaster per host (opened by the "
                f"run, closed at its end); host keys checked against the lab's known_hosts",
        "ansible": f"forks={n}, pipelining=True, gathering=explicit (gather_facts: false), ControlMaster=auto "
                   f"ControlPersist=60s (masters closed after every run, so each run connects afresh), no -C, "
                   f"host_key_checking=True with UserKnownHostsFile=lab known_hosts and StrictHostKeyChecking=yes, "
                   f"interpreter_python=/usr/bin/python3, linear strategy, default callback; loops per kind of task",
        "pyinfra": f"--parallel {n}; apply and re-run with -y (no change-detection pass, no prompt), check mode "
                   f"= --dry; paramiko with ssh_known_hosts_file=lab known_hosts and "
                   f"ssh_strict_host_key_checking=yes; `creates` guards are File facts",
        "floor": f"{manifest.TASKS_PER_HOST} x `ssh -o ControlMaster=no -o ControlPath=... hN true` in sequence per "
                 f"host, all hosts in parallel, over masters opened beforehand (ControlPersist=yes); each command "
                 f"starts an ssh client process (a few ms), which an engine speaking the mux protocol itself does "
                 f"not pay, so ours can come in under this floor",
        "timing": "wall clock of the whole command (start to exit) on this machine; the lab hosts run on the "
                  "same machine, so remote work competes with the controller for the same cores",
        "fresh hosts": "before each apply, /opt/bench is removed on every host (lab.sh exec hN rm -rf /opt/bench)",
    }


# ------------------------------------------------------------------ report

def med(runs: list[dict] | None) -> float | None:
    if not runs:
        return None
    return statistics.median(r["seconds"] for r in runs)


def fmt_s(x: float | None) -> str:
    return "—" if x is None else (f"{x:.2f}" if x < 100 else f"{x:.0f}")


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}" + (f" ({b / a:.1f}× faster)" if r < 1 and a > 0 else "")


def all_verified(runs: list[dict] | None) -> bool:
    return bool(runs) and all(r.get("verified") for r in runs)


def report(results_dir: Path) -> str:
    files = sorted(results_dir.glob("*.json"), key=lambda p: json.loads(p.read_text()).get("hosts", 0))
    if not files:
        return "No results yet: run `bash bench/run.sh`.\n"
    res = [json.loads(p.read_text()) for p in files]
    L = []
    # machine, versions and settings of the largest run that has every tool (forks etc. follow the host count)
    first = next((r for r in reversed(res) if len(r["tools"]) > 1), res[-1])
    L.append("Generated by `bash bench/run.sh` (bench/lib/bench.py report) from " +
             ", ".join(f"`{p.relative_to(REPO) if p.is_relative_to(REPO) else p}`" for p in files) + ".")
    L.append("")
    L.append("Workload: `bench/workload/` — the same 40 operations per host written three times "
             "(`site.rhai`, `site.yml`, `deploy.py`): 5 directories with modes, 10 files from shared Jinja2 "
             "templates with per-host variables, 5 static files, 5 lineinfile edits, 5 sysctl.d-style files, "
             "5 commands guarded by `creates`, owner/group/mode on 5 files; everything under /opt/bench.")
    L.append("Times are seconds, the median of the repetitions; ratios are ours ÷ theirs (below 1: ours is "
             "faster). Apply runs on fresh hosts, re-run and check mode on converged hosts. Every run is verified: "
             "exit status, the tool's own summary (0 failed/unreachable; 0 changed on converged hosts) and a "
             "manifest (type, mode, owner, SHA-256) of /opt/bench on every host against the expected one.")
    L.append("")
    for r in res:
        t = r["tools"]
        fl = med(t.get("floor", {}).get("floor"))
        L.append(f"## {r['hosts']} host{'s' if r['hosts'] != 1 else ''}")
        L.append("")
        L.append(f"{r['started']}, {r['reps']} repetitions, {r['tasks_per_host']} tasks per host, "
                 f"run took {r.get('duration_s', '?')} s; {r['versions']['playbook']}.")
        L.append("")
        L.append("| | ours | Ansible | pyinfra | floor | ours ÷ Ansible | ours ÷ pyinfra | ours ÷ floor |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        names = {"apply": "apply (fresh hosts)", "rerun": "converged re-run", "check": "check mode (converged)"}
        for m in MODES:
            o = med(t.get("ours", {}).get(m))
            an = med(t.get("ansible", {}).get(m))
            py = med(t.get("pyinfra", {}).get(m))
            L.append(f"| {names[m]} | {fmt_s(o)} | {fmt_s(an)} | {fmt_s(py)} | {fmt_s(fl)} | {fmt_ratio(o, an)} | "
                     f"{fmt_ratio(o, py)} | {fmt_ratio(o, fl)} |")
        L.append("")
        L.append("| controller | own peak RSS | largest process (time -v) | ssh processes (peak total, count) | "
                 "other helper processes (peak total) | CPU user+sys, all runs | verified |")
        L.append("|---|---:|---:|---:|---:|---:|---|")
        for tool in ("ours", "ansible", "pyinfra"):
            runs = [x for m in t.get(tool, {}).values() for x in m]
            if not runs:
                continue
            mb = lambda k: f"{max(x[k] for x in runs) / 1024:.1f} MB"  # noqa: E731
            cpu = sum(x["user_s"] + x["sys_s"] for x in runs)
            ok = all(x.get("verified") for x in runs)
            L.append(f"| {tool} | {mb('main_hwm_kb')} | {mb('maxrss_kb')} | {mb('ssh_peak_kb')}, "
                     f"{max(x['ssh_procs'] for x in runs)} | {mb('others_peak_kb')} | {cpu:.1f} s / {len(runs)} runs | "
                     f"{'yes' if ok else '**NO**'} |")
        conn = {tool: sum(x.get("connection_errors", 0) + x.get("counts", {}).get("unreachable", 0)
                          for m in t.get(tool, {}).values() for x in m) for tool in t if tool != "floor"}
        L.append("")
        L.append("Connection errors (unreachable hosts and connection failures in the output), all runs: " +
                 ", ".join(f"{k} {v}" for k, v in conn.items()) + ".")
        if r.get("problems"):
            L.append("")
            L.append("**Problems found by verification:**")
            L += [f"- {p}" for p in r["problems"]]
        L.append("")
    # targets of issue 5, at the largest host count that has all tools / at 100 hosts
    L.append("## Targets (issue 5)")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    r30 = next((r for r in res if r["hosts"] == 30), None)
    if r30:
        t = r30["tools"]
        o = {m: med(t.get("ours", {}).get(m)) for m in MODES}
        an = {m: med(t.get("ansible", {}).get(m)) for m in MODES}
        py = {m: med(t.get("pyinfra", {}).get(m)) for m in MODES}
        fl = med(t.get("floor", {}).get("floor"))

        def row(name, a, b, limit):
            if a is None or b is None:
                L.append(f"| {name} | — | — |")
            else:
                L.append(f"| {name} | {a / b:.2f} | {'yes' if a / b <= limit else 'no'} |")
        row("30 hosts, re-run: ours ÷ Ansible ≤ 0.10", o["rerun"], an["rerun"], 0.10)
        row("30 hosts, re-run: ours ÷ pyinfra ≤ 0.33", o["rerun"], py["rerun"], 1 / 3)
        row("30 hosts, re-run: ours ÷ floor ≤ 1.5", o["rerun"], fl, 1.5)
        row("30 hosts, apply: ours ÷ Ansible ≤ 0.20", o["apply"], an["apply"], 0.20)
        row("30 hosts, apply: ours ÷ pyinfra ≤ 0.50", o["apply"], py["apply"], 0.50)
        row("30 hosts, check ÷ re-run ≤ 1.0", o["check"], o["rerun"], 1.0)
        runs = [x for m in t.get("ours", {}).values() for x in m]
        if runs:
            peak = max(x["main_hwm_kb"] for x in runs) / 1024
            L.append(f"| 30 hosts, controller peak RSS ≤ 60 MB | {peak:.1f} MB | {'yes' if peak <= 60 else 'no'} |")
    else:
        L.append("| 30-host targets | no 30-host result yet | — |")
    r100 = next((r for r in res if r["hosts"] == 100), None)
    if r100:
        runs = [x for m in r100["tools"].get("ours", {}).values() for x in m]
        errs = sum(x.get("connection_errors", 0) + x.get("counts", {}).get("unreachable", 0) for x in runs)
        ok = runs and all(x.get("verified") for x in runs) and errs == 0
        L.append(f"| 100 light hosts: no connection errors | {errs} errors in {len(runs)} runs; apply "
                 f"{fmt_s(med(r100['tools']['ours'].get('apply')))} s, re-run "
                 f"{fmt_s(med(r100['tools']['ours'].get('rerun')))} s, peak RSS "
                 f"{max(x['main_hwm_kb'] for x in runs) / 1024:.1f} MB | {'yes' if ok else 'no'} |")
    else:
        L.append("| 100 light hosts: no connection errors | not run yet (`bash bench/run.sh --hosts 100 --only ours`) | — |")
    L.append("")
    L.append("## Machine, versions, settings")
    L.append("")
    L.append(f"As recorded by the {first['hosts']}-host run (other host counts differ only in forks/--parallel).")
    L.append("")
    m = first["machine"]
    L.append(f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB memory, {m['os']}, Linux {m['kernel']}; "
             "the lab hosts (light: namespaces + sshd) run on the same machine")
    for k, v in first["versions"].items():
        L.append(f"- {k}: {v}")
    for k, v in first["settings"].items():
        L.append(f"- {k}: {v}")
    L.append("")
    return "\n".join(L)


BEGIN, END = "<!-- bench:begin (generated by bench/run.sh; edit outside these markers) -->", "<!-- bench:end -->"


def write_doc(path: Path, body: str) -> None:
    block = f"{BEGIN}\n{body}\n{END}"
    if path.exists() and BEGIN in path.read_text() and END in path.read_text():
        text = path.read_text()
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        path.write_text(pre + block + post)
        return
    path.write_text(
        "# Performance\n\n"
        "The side-by-side benchmark of issue 5: our engine against Ansible and pyinfra on the same lab hosts,\n"
        "and against the floor (one SSH round trip per task). Re-run it with one command (as root, on a machine\n"
        "where the lab may be taken down and brought up; it takes the lab over):\n\n"
        "```sh\n"
        "bash bench/run.sh                          # 10 and 30 hosts, all tools, median of 3\n"
        "bash bench/run.sh --hosts 100 --only ours  # 100 light hosts: time, RSS, connection errors\n"
        "```\n\n"
        f"{block}\n\n"
        "## What each change bought\n\n"
        "Record here, per engine change, the numbers before and after (re-run, apply, check at 30 hosts).\n\n"
        "| change | re-run 30 hosts before → after | apply 30 hosts before → after |\n"
        "|---|---|---|\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--lab-dir", default=os.environ.get("LAB_DIR", "/srv/lab"))
    m.add_argument("--limit", help="comma-separated lab hosts (default: all hosts of the lab)")
    m.add_argument("--tools", default=",".join(TOOLS))
    m.add_argument("--reps", type=int, default=3)
    m.add_argument("--warmup", type=int, default=1, help="1: one unmeasured apply per tool first")
    m.add_argument("--clean-after", type=int, default=1, help="1: remove /opt/bench from the hosts at the end")
    m.add_argument("--playbook", type=Path, default=REPO / "target/release/playbook")
    m.add_argument("--work", default=str(BENCH / ".work" / "run"))
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", type=Path, default=BENCH / "results")
    r.add_argument("--write", type=Path, help="write the report into this markdown file (between markers)")
    a = ap.parse_args()
    if a.cmd == "measure":
        for t in a.tools.split(","):
            if t not in TOOLS:
                raise SystemExit(f"bench: unknown tool {t} (want {', '.join(TOOLS)})")
        b = Bench(a)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
        try:
            res = b.measure()
        finally:
            b.close_ansible_masters()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        log(f"results in {a.out}" + (f"; {len(res['problems'])} PROBLEMS" if res["problems"] else "; all runs verified"))
        return 1 if res["problems"] else 0
    body = report(a.results)
    print(body)
    if a.write:
        write_doc(a.write, body)
        log(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
