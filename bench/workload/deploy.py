"""The benchmark workload (issue 5) as a pyinfra 3.x deploy: the same 40 operations per host as
bench/workload/site.rhai, everything under /opt/bench.

Per-host variables (host data from the generated inventory): bench_id, bench_port, bench_zone,
bench_tags. The templates are the shared Jinja2 files in bench/workload/templates.

    cd bench/workload && pyinfra INVENTORY.py deploy.py --parallel N -y
"""

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import files, server

HERE = Path(__file__).resolve().parent
ROOT = "/opt/bench"
HEADER = "# managed by the bench workload\n"

# 5 directories with modes.
DIRS = [("", "0755"), ("/etc", "0755"), ("/static", "0755"), ("/sysctl.d", "0750"), ("/data", "0700")]

# 10 files rendered from the shared Jinja2 templates.
TEMPLATES = [
    ("app.conf", "0640"),
    ("vhost.conf", "0644"),
    ("logrotate.conf", "0644"),
    ("service.unit", "0644"),
    ("motd", "0644"),
    ("hosts.fragment", "0644"),
    ("cron.bench", "0644"),
    ("limits.conf", "0644"),
    ("config.json", "0640"),
    ("config.yaml", "0644"),
]

# 5 static files copied.
STATIC = [
    ("README.txt", "0644"),
    ("run.sh", "0755"),
    ("words.txt", "0644"),
    ("data.csv", "0644"),
    ("logo.svg", "0644"),
]

# 5 line edits of one environment file (pyinfra matches whole lines by regex and replaces them).
LINES = [
    ("^BENCH_HOST=.*$", f"BENCH_HOST={host.name}"),
    ("^BENCH_ID=.*$", f"BENCH_ID={host.data.bench_id}"),
    ("^BENCH_PORT=.*$", f"BENCH_PORT={host.data.bench_port}"),
    ("^BENCH_ZONE=.*$", f"BENCH_ZONE={host.data.bench_zone}"),
    ("^BENCH_MODE=.*$", "BENCH_MODE=production"),
]

# 5 sysctl.d-style files (content only; nothing calls sysctl).
SYSCTL = [
    ("60-bench-net.conf", "net.core.somaxconn = 4096\nnet.ipv4.tcp_max_syn_backlog = 8192\n"),
    ("61-bench-vm.conf", "vm.swappiness = 10\nvm.dirty_ratio = 15\n"),
    ("62-bench-fs.conf", "fs.file-max = 2097152\nfs.inotify.max_user_watches = 524288\n"),
    ("63-bench-kernel.conf", "kernel.pid_max = 4194304\n"),
    ("64-bench-tcp.conf", "net.ipv4.tcp_fin_timeout = 15\nnet.ipv4.tcp_keepalive_time = 300\n"),
]

TEMPLATE_VARS = dict(
    inventory_hostname=host.name,
    bench_id=host.data.bench_id,
    bench_port=host.data.bench_port,
    bench_zone=host.data.bench_zone,
    bench_tags=host.data.bench_tags,
)

for path, mode in DIRS:
    files.directory(name=f"directory {ROOT}{path}", path=ROOT + path, mode=mode)

for name, mode in TEMPLATES:
    files.template(
        name=f"template {name}",
        src=str(HERE / "templates" / f"{name}.j2"),
        dest=f"{ROOT}/etc/{name}",
        mode=mode,
        **TEMPLATE_VARS,
    )

for name, mode in STATIC:
    files.put(
        name=f"static {name}",
        src=str(HERE / "files" / name),
        dest=f"{ROOT}/static/{name}",
        mode=mode,
    )

for regex, line in LINES:
    files.line(name=f"line {regex}", path=f"{ROOT}/etc/bench.env", line=regex, replace=line)

for name, content in SYSCTL:
    files.put(
        name=f"sysctl.d {name}",
        src=StringIO(HEADER + content),
        dest=f"{ROOT}/sysctl.d/{name}",
        mode="0644",
    )

# 5 commands guarded like Ansible's `creates`: run only when the file they make is missing.
for i in range(1, 6):
    done = f"{ROOT}/data/step{i}.done"
    if not host.get_fact(File, path=done):
        server.shell(name=f"step {i}", commands=[f'echo "step {i} on {host.name}" > {done}'])

# Owner, group and mode on the 5 files the commands made.
for i in range(1, 6):
    files.file(
        name=f"owner/mode step{i}.done",
        path=f"{ROOT}/data/step{i}.done",
        user="deploy",
        group="deploy",
        mode="0640",
    )
