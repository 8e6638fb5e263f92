//! The benchmark's workload (bench/workload/site.rhai, 40 tasks per host) over the local
//! connection: what it costs in round trips per host (remote commands, counted by the engine and
//! shown in the JSON recap), and that the ways of saving them change no result. Deterministic:
//! counts, never times.

use std::path::Path;

use crate::support::{Conn, Output, Project};

const HOSTS: [&str; 2] = ["h1", "h2"];
const TASKS: usize = 40;

/// The workload as the bench runs it, with its root moved under each host's own test root and
/// its file owner made one that exists here.
fn workload() -> Project {
    let p = Project::new(Conn::Local);
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/workload");
    let site = std::fs::read_to_string(bench.join("site.rhai")).unwrap();
    let root_const = "const ROOT = \"/opt/bench\";";
    let owner = "owner: \"deploy\", group: \"deploy\"";
    assert!(
        site.contains(root_const) && site.contains(owner),
        "bench/workload/site.rhai changed: update this test"
    );
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    let site = site
        .replace(root_const, "const ROOT = \"{{ root }}\";")
        .replace(owner, &format!("owner: \"{me}\", group: \"{me}\""));
    p.file("site.rhai", &site);
    for dir in ["templates", "files"] {
        for entry in std::fs::read_dir(bench.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            p.file(
                &format!("{dir}/{name}"),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    // The per-host variables of bench/lib/inventory.py `host_vars`.
    let mut inv = String::from("[defaults]\nconnection = \"local\"\n\n");
    for (i, h) in HOSTS.iter().enumerate() {
        let n = i + 1;
        let zone = ["zone-a", "zone-b", "zone-c"][n % 3];
        let parity = if n % 2 == 0 { "even" } else { "odd" };
        inv += &format!(
            "[hosts.{h}]\nvars = {{ root = \"{}\", bench_id = {n}, bench_port = {}, \
             bench_zone = \"{zone}\", bench_tags = [\"bench\", \"{zone}\", \"{parity}\"] }}\n\n",
            p.root(h).display(),
            8000 + n
        );
    }
    p.file("inventory.toml", &inv);
    p
}

/// Round trips per host, from the JSON recap.
fn round_trips(out: &Output) -> Vec<u64> {
    HOSTS.iter().map(|h| round_trips_of(out, h)).collect()
}

fn snapshot(p: &Project) -> Vec<(String, String)> {
    HOSTS
        .iter()
        .flat_map(|h| {
            crate::support::snapshot_tree(&p.root(h))
                .into_iter()
                .map(move |(k, v)| (format!("{h}:{k}"), v))
        })
        .collect()
}

#[test]
fn bench_workload_round_trips_and_truthful_check_mode() {
    let p = workload();
    for h in HOSTS {
        std::fs::create_dir_all(p.root(h).parent().unwrap()).unwrap();
    }
    let before = snapshot(&p);
    let check = p.play("site.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(snapshot(&p), before, "check mode changed files");

    let apply = p.play("site.rhai", &[]);
    apply.assert_code(0);
    assert_eq!(
        apply.total("changed") as usize,
        TASKS * HOSTS.len(),
        "{}",
        apply.stdout
    );
    // Check mode predicted every change it could: the others are the tasks it reported as
    // depending on a change above (the `file` tasks on files a guarded command creates).
    let predicted = check.changed();
    let real = apply.changed();
    for c in &predicted {
        assert!(real.contains(c), "predicted {c:?}, but it did not change");
    }
    for e in check.task_ends() {
        let key = (
            e["host"].as_str().unwrap().to_string(),
            e["task"].as_str().unwrap().to_string(),
        );
        if real.contains(&key) && !predicted.contains(&key) {
            assert_eq!(e["status"], "skipped", "{e}");
            let msg = e["msg"].as_str().unwrap();
            assert!(msg.starts_with("depends on a change above"), "{msg}");
        }
    }
    assert_eq!(
        predicted.len(),
        (TASKS - 5) * HOSTS.len(),
        "{}",
        check.stdout
    );

    let converged = snapshot(&p);
    let rerun = p.play("site.rhai", &[]);
    rerun.assert_code(0);
    assert_eq!(rerun.total("changed"), 0, "{}", rerun.stdout);
    let recheck = p.play("site.rhai", &["--check"]);
    recheck.assert_code(0);
    assert_eq!(recheck.total("changed"), 0, "{}", recheck.stdout);
    assert_eq!(recheck.total("skipped"), 0, "{}", recheck.stdout);
    assert_eq!(snapshot(&p), converged);

    eprintln!(
        "round trips per host ({HOSTS:?}): check on fresh hosts {:?}, apply {:?}, re-run {:?}, check on converged hosts {:?}",
        round_trips(&check),
        round_trips(&apply),
        round_trips(&rerun),
        round_trips(&recheck)
    );
    // The probes of a converged host's phase go in one round trip (41 before they were batched).
    for (what, out) in [
        ("re-run", &rerun),
        ("check", &recheck),
        ("fresh check", &check),
    ] {
        for n in round_trips(out) {
            assert!(n <= 3, "{what}: {n} round trips per host");
        }
    }
    // On fresh hosts every task changes something: one batch, then one round trip per task, in
    // which the next task's probe reads what the change left (81 before).
    assert_eq!(round_trips(&apply), vec![TASKS as u64 + 1; HOSTS.len()]);
}

/// Probes read ahead are read again once a task changed the host, in the change's own round trip:
/// here the guarded command creates the file that the next task edits.
#[test]
fn a_change_in_a_batch_makes_later_probes_read_again() {
    let p = Project::new(Conn::Local);
    p.hosts(&["a"], &[]);
    p.file(
        "edit.rhai",
        r#"
phase("edit", || {
    on("all", [
        file(#{ path: "{{ root }}", state: "directory" }),
        shell(#{ cmd: "printf 'a\n' > {{ root }}/f", creates: "{{ root }}/f" }),
        lineinfile(#{ path: "{{ root }}/f", line: "b" }),
    ]);
});
"#,
    );
    p.play("edit.rhai", &[]).assert_code(0);
    let f = p.root("a").join("f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "a\nb\n");
    std::fs::remove_file(&f).unwrap();

    // Check mode changes nothing, so what the batch read stays true: one round trip, and the
    // edit of a file that only the command above would create says so.
    let check = p.play("edit.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(round_trips_of(&check, "a"), 1);
    let edit = check.task_ends().pop().unwrap();
    assert_eq!(edit["status"], "skipped", "{edit}");
    assert!(edit["msg"]
        .as_str()
        .unwrap()
        .starts_with("depends on a change above"));

    // One batch (3 probes), the command with the edit's probe after it (which finds the new
    // file), the edit.
    let out = p.play("edit.rhai", &[]);
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "a\nb\n");
    assert_eq!(out.total("changed"), 2, "{}", out.stdout);
    assert_eq!(round_trips_of(&out, "a"), 3);
}

/// A probe read before a change is never what a task decides from: a command rewrites two files
/// after the batch read them; the copy that the batch saw as missing is already right (ok), the
/// one it saw as right is not (changed).
#[test]
fn no_task_decides_from_a_probe_older_than_a_change() {
    let p = Project::new(Conn::Local);
    p.hosts(&["a"], &[]);
    p.file(
        "stale.rhai",
        r#"
phase("stale", || {
    on("all", [
        shell(#{ cmd: "cd {{ root }} && printf 'x\n' > a && printf 'y\n' > b" }),
        copy(#{ dest: "{{ root }}/a", content: "x\n" }),
        copy(#{ dest: "{{ root }}/b", content: "x\n" }),
    ]);
});
"#,
    );
    p.mkroot("a");
    let root = p.root("a");
    std::fs::write(root.join("b"), "x\n").unwrap();
    let out = p.play("stale.rhai", &["--diff"]);
    out.assert_code(0);
    let ends = out.task_ends();
    let status: Vec<&str> = ends.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["changed", "ok", "changed"], "{}", out.stdout);
    // The diff starts from what the command left, not from what the batch read.
    assert_eq!(ends[2]["diff"]["before"], "y\n", "{}", ends[2]);
    assert_eq!(ends[2]["diff"]["after"], "x\n", "{}", ends[2]);
    assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "x\n");
    assert_eq!(std::fs::read_to_string(root.join("b")).unwrap(), "x\n");
    // The batch (2 probes); the command, with the first copy's probe after it; the second
    // copy's probe (one alone is no batch); its change.
    assert_eq!(round_trips_of(&out, "a"), 4, "{}", out.stdout);
}

fn round_trips_of(out: &Output, host: &str) -> u64 {
    out.recap()["hosts"][host]["round_trips"].as_u64().unwrap()
}

/// Facts are gathered (one round trip) only for tasks that read them: a template file that names
/// `facts` or `hostvars`, or includes another template; a condition or an argument that mentions
/// them (assert's expressions too).
#[test]
fn facts_are_gathered_only_for_what_reads_them() {
    let p = Project::new(Conn::Local);
    p.hosts(&["a"], &[("g", &["a"][..])]);
    p.mkroot("a");
    p.file("templates/plain.j2", "{{ inventory_hostname }}\n")
        .file("templates/info.j2", "{{ facts.os_family }}\n")
        .file("templates/incl.j2", "{% include 'templates/info.j2' %}")
        .file(
            "templates/all.j2",
            "{{ groups.g | join(',') }} {{ hostvars['a'].facts.os_family }}\n",
        )
        .file(
            "plain.rhai",
            r#"on("all", file_template(#{ src: "templates/plain.j2", dest: "{{ root }}/plain" }));"#,
        )
        .file(
            "reads.rhai",
            r#"
on("all", file_template(#{ src: "templates/incl.j2", dest: "{{ root }}/incl" }));
on("all", file_template(#{ src: "templates/all.j2", dest: "{{ root }}/all" }));
on("all", assert(#{ that: ["facts.os_family != ''"] }));
"#,
        );
    p.play("plain.rhai", &[]).assert_code(0);
    let again = p.play("plain.rhai", &[]);
    again.assert_code(0);
    assert_eq!(round_trips_of(&again, "a"), 1, "one probe, no facts");

    p.play("reads.rhai", &[]).assert_code(0);
    let root = p.root("a");
    let family = std::fs::read_to_string(root.join("incl")).unwrap();
    assert!(!family.trim().is_empty());
    // An included template loses its last newline, as in Ansible's Jinja.
    assert_eq!(
        std::fs::read_to_string(root.join("all")).unwrap(),
        format!("a {family}\n")
    );
    let again = p.play("reads.rhai", &[]);
    again.assert_code(0);
    assert_eq!(
        round_trips_of(&again, "a"),
        2,
        "facts, then both probes in one batch"
    );
}
