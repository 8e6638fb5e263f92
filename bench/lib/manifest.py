"""What the workload must leave on a host, and what a host has.

`expected(host)` renders the workload independently of the three tools (Jinja2 with
keep_trailing_newline, the same data as bench/workload/site.rhai, site.yml and deploy.py);
`actual(upper)` reads /opt/bench from a lab host's overlay upper directory on this machine.
A manifest maps a path relative to /opt/bench to (type, mode, uid, gid, sha256)."""

import hashlib
import os
import stat
from pathlib import Path

import jinja2

WORKLOAD = Path(__file__).resolve().parent.parent / "workload"
ROOT = "/opt/bench"
HEADER = "# managed by the bench workload\n"

DIRS = [("", 0o755), ("etc", 0o755), ("static", 0o755), ("sysctl.d", 0o750), ("data", 0o700)]
TEMPLATES = [
    ("app.conf", 0o640), ("vhost.conf", 0o644), ("logrotate.conf", 0o644), ("service.unit", 0o644),
    ("motd", 0o644), ("hosts.fragment", 0o644), ("cron.bench", 0o644), ("limits.conf", 0o644),
    ("config.json", 0o640), ("config.yaml", 0o644),
]
STATIC = [("README.txt", 0o644), ("run.sh", 0o755), ("words.txt", 0o644), ("data.csv", 0o644), ("logo.svg", 0o644)]
SYSCTL = [
    ("60-bench-net.conf", "net.core.somaxconn = 4096\nnet.ipv4.tcp_max_syn_backlog = 8192\n"),
    ("61-bench-vm.conf", "vm.swappiness = 10\nvm.dirty_ratio = 15\n"),
    ("62-bench-fs.conf", "fs.file-max = 2097152\nfs.inotify.max_user_watches = 524288\n"),
    ("63-bench-kernel.conf", "kernel.pid_max = 4194304\n"),
    ("64-bench-tcp.conf", "net.ipv4.tcp_fin_timeout = 15\nnet.ipv4.tcp_keepalive_time = 300\n"),
]
TASKS_PER_HOST = len(DIRS) + len(TEMPLATES) + len(STATIC) + 5 + len(SYSCTL) + 5 + 5  # 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected(host: dict, deploy_uid: int, deploy_gid: int) -> dict:
    name, v = host["name"], host["vars"]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WORKLOAD / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    m = {}
    for d, mode in DIRS:
        m[d or "."] = ("d", mode, 0, 0, "-")
    for t, mode in TEMPLATES:
        text = env.get_template(f"{t}.j2").render(inventory_hostname=name, **v)
        m[f"etc/{t}"] = ("f", mode, 0, 0, sha(text.encode()))
    for s, mode in STATIC:
        m[f"static/{s}"] = ("f", mode, 0, 0, sha((WORKLOAD / "files" / s).read_bytes()))
    env_lines = [
        f"BENCH_HOST={name}", f"BENCH_ID={v['bench_id']}", f"BENCH_PORT={v['bench_port']}",
        f"BENCH_ZONE={v['bench_zone']}", "BENCH_MODE=production",
    ]
    m["etc/bench.env"] = ("f", 0o644, 0, 0, sha(("\n".join(env_lines) + "\n").encode()))
    for s, content in SYSCTL:
        m[f"sysctl.d/{s}"] = ("f", 0o644, 0, 0, sha((HEADER + content).encode()))
    for i in range(1, 6):
        m[f"data/step{i}.done"] = ("f", 0o640, deploy_uid, deploy_gid, sha(f"step {i} on {name}\n".encode()))
    return m


def actual(upper: Path) -> tuple[dict, dict]:
    """(manifest, stamps): stamps maps path -> (inode, mtime_ns, ctime_ns) to tell rewrites."""
    m, stamps = {}, {}
    if not upper.is_dir():
        return m, stamps
    for d, dirs, files in os.walk(upper):
        dirs.sort()
        for n in ["."] + sorted(files) + dirs if Path(d) == upper else sorted(files) + dirs:
            p = Path(d) if n == "." else Path(d) / n
            rel = os.path.relpath(p, upper)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                kind, digest = "d", "-"
            elif stat.S_ISREG(st.st_mode):
                kind, digest = "f", sha(p.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                kind, digest = "l", os.readlink(p)
            else:  # overlay whiteouts (char 0/0) and anything else
                kind, digest = "other", "-"
            m[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
            if kind == "f":
                stamps[rel] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return m, stamps


def diff(want: dict, have: dict, limit: int = 8) -> list[str]:
    out = []
    for p in sorted(set(want) | set(have)):
        w, h = want.get(p), have.get(p)
        if w == h:
            continue
        if h is None:
            out.append(f"missing {p}")
        elif w is None:
            out.append(f"unexpected {p} {fmt(h)}")
        else:
            out.append(f"{p}: want {fmt(w)}, have {fmt(h)}")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def fmt(e) -> str:
    kind, mode, uid, gid, digest = e
    return f"{kind} {mode:04o} {uid}:{gid} {digest[:12]}"


def upper_dir(lab_dir: Path, name: str) -> Path:
    """Where /opt/bench of lab host `name` lives on this machine (light or systemd hosts)."""
    light = lab_dir / "hosts" / name / "ov" / "opt" / "upper" / "bench"
    if light.parent.is_dir():
        return light
    return lab_dir / "hosts" / name / "upper" / "opt" / "bench"


def passwd_ids(lab_dir: Path, name: str, user: str = "deploy") -> tuple[int, int]:
    """uid and gid of `user` on lab host `name` (its /etc/passwd copy in the overlay)."""
    for p in (lab_dir / "hosts" / name / "ov" / "etc" / "upper" / "passwd",
              lab_dir / "hosts" / name / "upper" / "etc" / "passwd", Path("/etc/passwd")):
        if p.is_file():
            for line in p.read_text().splitlines():
                f = line.split(":")
                if f[0] == user:
                    return int(f[2]), int(f[3])
    raise SystemExit(f"bench: no user {user} on {name}")
