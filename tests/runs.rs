//! Whole runs, each test once over the local connection and once over real SSH against the lab:
//! convergence, idempotency, truthful check mode, values passed between hosts, custom Rhai tasks,
//! handlers, failures, tags, limits and imports.

use crate::support::{Conn, Project};

/// Each test runs twice: `local::NAME` on the local connection and `ssh::NAME` on lab hosts
/// (skipped, and saying so, when the lab is not up).
macro_rules! on_both_connections {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name(crate::support::Project::new(crate::support::Conn::Local)); } )*
        }
        mod ssh {
            $( #[test] fn $name() {
                if let Some(p) = crate::support::Project::lab(stringify!($name)) { super::$name(p); }
            } )*
        }
    };
}

on_both_connections!(
    every_core_module_behaves_the_same,
    facts_are_gathered_once_and_usable_in_conditions_args_and_templates,
    converges_then_second_run_changes_nothing,
    check_mode_on_fresh_hosts_changes_nothing_and_predicts_the_real_run,
    check_mode_on_converged_hosts_reports_no_change,
    diff_shows_the_file_change,
    a_value_made_on_one_host_is_used_on_two_others,
    custom_rhai_task_supports_check_mode,
    handlers_run_once_per_host_per_phase_and_only_when_notified,
    a_throttled_handler_rolls_over_the_hosts_and_stops_at_a_failure,
    a_failed_task_stops_its_host_only_and_exits_2,
    tags_limit_and_imports,
    closures_made_in_a_library_run_when_the_task_runs,
    check_mode_says_when_a_prediction_depends_on_a_change_above,
    check_mode_predicts_a_new_file_whose_content_depends_on_a_change_above,
    a_value_quoted_in_rhai_reaches_the_shell_as_it_is,
    a_task_retries_until_a_file_appears_and_gives_up_naming_its_attempts,
    run_once_timeout_and_environment,
    become_per_task_runs_one_task_as_another_user,
    templated_variables_render_when_read_as_ansible_renders_them,
    command_output_is_kept_bounded_and_shown_lines_are_capped,
    rescue_runs_on_failure_and_always_runs_in_both_cases,
    a_handler_notified_before_a_failure_runs_in_the_next_run,
    retries_wait_for_a_port_that_opens_after_a_few_seconds,
    a_delegated_task_writes_on_the_delegate_with_the_delegating_hosts_vars,
);

/// A port no one listens on now (the kernel's pick for a socket bound to port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn retries_wait_for_a_port_that_opens_after_a_few_seconds(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    let port = free_port();
    p.file(
        "port.rhai",
        &r#"
on("all", shell(#{ cmd: "nohup python3 -c 'import socket, time; time.sleep(3); s = socket.socket(); s.bind((\"127.0.0.1\", PORT)); s.listen(1); time.sleep(10)' >/dev/null 2>&1 &" })
    .name("open the port in 3 s"));
on("all", command(#{ argv: ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', PORT), 1)"] })
    .name("wait for the port").retries(15).delay(1));
"#
        .replace("PORT", &port.to_string()),
    );
    let out = p.play("port.rhai", &[]);
    out.assert_code(0);
    let ends = out.task_ends();
    assert_eq!(ends[1]["task"], "wait for the port");
    assert_eq!(ends[1]["status"], "changed", "{}", out.stdout);
    let retries = out
        .events()
        .into_iter()
        .filter(|e| e["event"] == "task_retry" && e["task"] == "wait for the port")
        .count();
    // Closed for 3 s, tried each second: refused at least twice, open well before 15 tries.
    assert!(
        (2..=10).contains(&retries),
        "{retries} retries\n{}",
        out.stdout
    );
}

fn a_delegated_task_writes_on_the_delegate_with_the_delegating_hosts_vars(p: Project) {
    p.hosts(&["a", "b"], &[]);
    p.mkroot("a");
    p.mkroot("b");
    p.file(
        "delegate.rhai",
        r#"
on("a", copy(#{ dest: "{{ root }}/written-for-{{ inventory_hostname }}", content: "{{ inventory_hostname }}" })
    .delegate_to("b"));
"#,
    );
    let out = p.play("delegate.rhai", &[]);
    out.assert_code(0);
    let changed: Vec<String> = out.changed().into_iter().map(|(h, _)| h).collect();
    assert_eq!(changed, ["a"], "{}", out.stdout);
    // a's variables (its name, its root), b's machine: on the lab each host has its own disk.
    let written = match p.conn {
        Conn::Local => p.root("a").join("written-for-a"),
        Conn::Lab => {
            assert!(!p.root("a").join("written-for-a").exists(), "written on a");
            p.root("b").join("written-for-a")
        }
    };
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "a");
    assert!(!out.recap()["hosts"].as_object().unwrap().contains_key("b"));
}

/// A playbook that uses most core modules; every path is under the host's own `root`.
const SITE: &str = r#"
phase("files", || {
    on("all", [
        file(#{ path: "{{ root }}/etc", state: "directory", mode: "0755" }),
        copy(#{ dest: "{{ root }}/etc/motd", content: "welcome to {{ inventory_hostname }}\n", mode: "0640" }),
        file_template(#{ src: "templates/app.conf.j2", dest: "{{ root }}/etc/app.conf", mode: "0600" })
            .notify("restart app"),
        lineinfile(#{ path: "{{ root }}/etc/hosts", line: "10.0.0.1 api.local", create: true }),
        shell(#{ cmd: "echo built > {{ root }}/built.txt", creates: "{{ root }}/built.txt" }),
    ]);
    handler("restart app", shell(#{ cmd: "echo restart >> {{ root }}/restarts.log" }));
});
phase("verify", || {
    on("all", command(#{ argv: ["cat", "{{ root }}/etc/motd"], changed_when: false })
        .check_mode(false).register("motd"));
    on("all", assert(#{ that: ["motd.stdout == 'welcome to ' ~ inventory_hostname", "{{ motd.rc == 0 }}"] }));
});
"#;

const APP_CONF: &str = "# app for {{ inventory_hostname }}\nport = {{ port | default(8080) }}\n";

fn site(p: Project) -> Project {
    p.file("site.rhai", SITE)
        .file("templates/app.conf.j2", APP_CONF)
        .hosts(&["a", "b"], &[("web", &["a", "b"])]);
    p
}

fn converges_then_second_run_changes_nothing(p: Project) {
    let p = site(p);
    let first = p.play("site.rhai", &[]);
    first.assert_code(0);
    // 5 tasks + the handler, on two hosts.
    assert_eq!(first.total("changed"), 12, "{}", first.stdout);
    for h in ["a", "b"] {
        let root = p.root(h);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/motd")).unwrap(),
            format!("welcome to {h}\n")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
            format!("# app for {h}\nport = 8080\n")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("restarts.log")).unwrap(),
            "restart\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("etc/app.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = p.play("site.rhai", &[]);
    second.assert_code(0);
    assert_eq!(second.total("changed"), 0, "{}", second.stdout);
    for h in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("restarts.log")).unwrap(),
            "restart\n",
            "the handler runs only when notified"
        );
    }
}

fn check_mode_on_fresh_hosts_changes_nothing_and_predicts_the_real_run(p: Project) {
    let p = site(p);
    p.mkroot("a");
    p.mkroot("b");
    let before = p.snapshot();
    let check = p.play("site.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(p.snapshot(), before, "check mode changed files");
    let real = p.play("site.rhai", &[]);
    real.assert_code(0);
    assert_eq!(
        check.changed(),
        real.changed(),
        "check predicted:\n{}\nreal:\n{}",
        check.stdout,
        real.stdout
    );
    // The task that reads a result that check mode cannot know says so instead of guessing.
    let verify: Vec<_> = check
        .task_ends()
        .into_iter()
        .filter(|e| e["phase"] == "verify" && e["module"] == "assert")
        .collect();
    assert_eq!(verify.len(), 2);
    for e in verify {
        assert_eq!(e["status"], "skipped", "{e}");
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("depends on a change above"),
            "{e}"
        );
    }
}

fn check_mode_on_converged_hosts_reports_no_change(p: Project) {
    let p = site(p);
    p.play("site.rhai", &[]).assert_code(0);
    let before = p.snapshot();
    let check = p.play("site.rhai", &["--check", "--diff"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);
    assert_eq!(check.total("skipped"), 0, "{}", check.stdout);
    assert_eq!(p.snapshot(), before);
}

fn diff_shows_the_file_change(p: Project) {
    let p = site(p);
    p.play("site.rhai", &[]).assert_code(0);
    let out = p.run(&[
        "run",
        "site.rhai",
        "-i",
        "inventory.toml",
        "--check",
        "--diff",
        "-e",
        "port=9090",
    ]);
    out.assert_code(0);
    assert!(out.stdout.contains("-port = 8080"), "{}", out.stdout);
    assert!(out.stdout.contains("+port = 9090"), "{}", out.stdout);
    assert!(out.stdout.contains("would change"), "{}", out.stdout);
}

fn a_value_made_on_one_host_is_used_on_two_others(p: Project) {
    p.hosts(
        &["a", "b", "c"],
        &[("first", &["a"][..]), ("others", &["b", "c"][..])],
    );
    p.file(
        "pass.rhai",
        r#"
phase("token", || {
    let tok = on("first", shell(#{ cmd: "mkdir -p {{ root }} && test -f {{ root }}/token || head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' > {{ root }}/token; cat {{ root }}/token" })
        .name("make token").register("tok"));
    on("others", copy(#{ dest: "{{ root }}/joined-with", content: "{{ tok.stdout }}\n" }).name("write token from template"));
    on("others", copy(#{ dest: "{{ root }}/from-handle", content: tok.stdout }).name("write from handle"));
    on("others", copy(#{ dest: "{{ root }}/closure", content: || "token=" + tok.stdout }).name("write from closure"));
});
"#,
    );
    p.mkroot("b");
    p.mkroot("c");
    let out = p.play("pass.rhai", &[]);
    out.assert_code(0);
    let token = std::fs::read_to_string(p.root("a").join("token")).unwrap();
    assert_eq!(token.len(), 16, "a real random token: {token}");
    for h in ["b", "c"] {
        let root = p.root(h);
        assert_eq!(
            std::fs::read_to_string(root.join("joined-with")).unwrap(),
            format!("{token}\n")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("from-handle")).unwrap(),
            token
        );
        assert_eq!(
            std::fs::read_to_string(root.join("closure")).unwrap(),
            format!("token={token}")
        );
    }
    // The graph knows the consumers wait for the producer.
    let dot = p.run(&["graph", "pass.rhai", "-i", "inventory.toml"]);
    dot.assert_code(0);
    assert!(dot.stdout.contains("t0 -> t1"), "{}", dot.stdout);
    assert!(dot.stdout.contains("t0 -> t3"), "{}", dot.stdout);
}

fn custom_rhai_task_supports_check_mode(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.file(
        "custom.rhai",
        r#"
on("all", task("ensure greeting", |h| {
    let path = h.vars.root + "/greeting";
    let current = h.read_file(path);
    if current == "hello " + h.name { return "ok"; }
    if h.check { return #{ changed: true, msg: "would write " + path }; }
    h.write_file(path, "hello " + h.name);
    #{ changed: true, msg: "wrote " + path }
}));
"#,
    );
    let check = p.play("custom.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 1);
    assert!(
        !p.root("a").join("greeting").exists(),
        "check mode wrote the file"
    );
    p.play("custom.rhai", &[]).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("greeting")).unwrap(),
        "hello a"
    );
    let again = p.play("custom.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0);
}

fn handlers_run_once_per_host_per_phase_and_only_when_notified(p: Project) {
    p.hosts(&["a", "b"], &[]);
    for h in ["a", "b"] {
        p.mkroot(h);
    }
    p.file(
        "handlers.rhai",
        r#"
phase("one", || {
    on("all", copy(#{ dest: "{{ root }}/x", content: "1" }).notify("log"));
    on("all", copy(#{ dest: "{{ root }}/y", content: "{{ 'changed' if inventory_hostname == 'a' else 'same' }}" }).notify("log"));
    handler("log", shell(#{ cmd: "echo one >> {{ root }}/handler.log" }));
});
phase("two", || {
    on("all", copy(#{ dest: "{{ root }}/z", content: "z" }).when("inventory_hostname == 'b'").notify("log2"));
    handler("log2", shell(#{ cmd: "echo two >> {{ root }}/handler.log" }));
});
"#,
    );
    p.write("b", "y", "same");
    p.play("handlers.rhai", &[]).assert_code(0);
    // a: two notifying changes in phase one -> one run; b: one change in phase one, one in two.
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("handler.log")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.root("b").join("handler.log")).unwrap(),
        "one\ntwo\n"
    );
    p.play("handlers.rhai", &[]).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("handler.log")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.root("b").join("handler.log")).unwrap(),
        "one\ntwo\n"
    );
}

fn a_throttled_handler_rolls_over_the_hosts_and_stops_at_a_failure(p: Project) {
    let hosts = ["a", "b", "c", "d"];
    p.hosts(&hosts, &[]);
    for h in hosts {
        p.mkroot(h);
    }
    p.file(
        "rolling.rhai",
        r#"
on("all", shell(#{ cmd: "date +%s.%N > {{ root }}/t-start && sleep 0.2 && date +%s.%N > {{ root }}/t-end" })
    .throttle(1).name("one at a time"));
on("all", copy(#{ dest: "{{ root }}/conf", content: "v2" }).notify("restart"));
handler("restart", shell(#{ cmd: "date +%s.%N > {{ root }}/start && sleep 0.3 && test {{ inventory_hostname }} != c && date +%s.%N > {{ root }}/end" })
    .throttle(1));
"#,
    );
    let out = p.play("rolling.rhai", &[]);
    out.assert_code(2);
    let time = |h: &str, f: &str| -> f64 {
        let text =
            std::fs::read_to_string(p.root(h).join(f)).unwrap_or_else(|e| panic!("{h}/{f}: {e}"));
        text.trim().parse().unwrap()
    };
    // A throttled task: never two hosts at once.
    let mut spans: Vec<(f64, f64)> = hosts
        .iter()
        .map(|h| (time(h, "t-start"), time(h, "t-end")))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "overlapping runs of a throttle(1) task: {spans:?}"
        );
    }
    // One host at a time, in inventory order: each starts after the one before it ended.
    assert!(time("b", "start") >= time("a", "end"), "b waited for a");
    assert!(time("c", "start") >= time("b", "end"), "c waited for b");
    assert!(!p.root("c").join("end").exists(), "c failed");
    assert!(
        !p.root("d").join("start").exists(),
        "d was not restarted after c failed"
    );
    let skipped = out.tasks_where(|e| {
        e["status"] == "skipped"
            && e["msg"]
                .as_str()
                .is_some_and(|m| m.contains("the rolling run of this handler stopped at c"))
    });
    assert_eq!(skipped, [("d".to_string(), "restart".to_string())]);
    // Not a throttle at all: refused while planning, naming the line.
    p.file(
        "zero.rhai",
        "on(\"all\", shell(#{ cmd: \"true\" }).throttle(0));\n",
    );
    let out = p.run(&["plan", "zero.rhai", "-i", "inventory.toml"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("zero.rhai:1:") && out.stderr.contains("throttle(0)"),
        "{}",
        out.stderr
    );
}

fn a_failed_task_stops_its_host_only_and_exits_2(p: Project) {
    p.hosts(&["a", "b"], &[]);
    for h in ["a", "b"] {
        p.mkroot(h);
    }
    p.file(
        "fail.rhai",
        r#"
on("all", shell(#{ cmd: "test {{ inventory_hostname }} = b" }).name("only b passes"));
on("all", copy(#{ dest: "{{ root }}/after", content: "x" }));
"#,
    );
    let out = p.play("fail.rhai", &[]);
    out.assert_code(2);
    assert!(!p.root("a").join("after").exists());
    assert!(p.root("b").join("after").exists());
    let failed: Vec<_> = out
        .task_ends()
        .into_iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["host"], "a");
}

fn tags_limit_and_imports(p: Project) {
    p.hosts(&["a", "b"], &[]);
    for h in ["a", "b"] {
        p.mkroot(h);
    }
    p.file(
        "lib/files.rhai",
        r#"
fn write(name) {
    on("all", copy(#{ dest: "{{ root }}/" + name, content: name }).tags([name]))
}
"#,
    );
    p.file(
        "tags.rhai",
        r#"
import "lib/files" as files;
for n in ["one", "two"] { files::write(n); }
"#,
    );
    p.play("tags.rhai", &["--tags", "two", "--limit", "b"])
        .assert_code(0);
    assert!(!p.root("a").join("two").exists());
    assert!(!p.root("b").join("one").exists());
    assert_eq!(
        std::fs::read_to_string(p.root("b").join("two")).unwrap(),
        "two"
    );
}

/// A closure made inside an imported library's function is linked to that library's functions;
/// it must still run when the task runs (long after the library function returned).
fn closures_made_in_a_library_run_when_the_task_runs(p: Project) {
    p.hosts(&["a", "b"], &[]);
    for h in ["a", "b"] {
        p.mkroot(h);
    }
    p.file(
        "lib/marks.rhai",
        r#"
fn suffix() { "!" }
fn mark(probe) {
    on("all", copy(#{ dest: "{{ root }}/mark", content: |h| "seen " + probe.on_host(h.name).stdout + suffix() })
        .when(|h| probe.on_host(h.name).stdout != "skip"))
}
"#,
    );
    p.file(
        "marks.rhai",
        r#"
import "lib/marks" as marks;
let probe = on("all", shell(#{ cmd: "if [ {{ inventory_hostname }} = b ]; then echo skip; else echo {{ inventory_hostname }}; fi", changed_when: false }));
marks::mark(probe);
"#,
    );
    let out = p.play("marks.rhai", &[]);
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("mark")).unwrap(),
        "seen a!"
    );
    assert!(!p.root("b").join("mark").exists(), "{}", out.stdout);
}

fn check_mode_says_when_a_prediction_depends_on_a_change_above(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.file(
        "link.rhai",
        r#"
on("all", copy(#{ dest: "{{ root }}/motd", content: "hi" }));
on("all", file(#{ path: "{{ root }}/motd.link", state: "link", src: "{{ root }}/motd" }));
"#,
    );
    let check = p.play("link.rhai", &["--check"]);
    check.assert_code(0);
    let ends = check.task_ends();
    assert_eq!(ends[0]["status"], "changed");
    assert_eq!(ends[1]["status"], "skipped", "{}", check.stdout);
    let msg = ends[1]["msg"].as_str().unwrap();
    assert!(msg.starts_with("depends on a change above"), "{msg}");
    assert!(
        msg.contains("does not exist"),
        "the module's own reason is kept: {msg}"
    );
    assert!(!p.root("a").join("motd").exists());
    let real = p.play("link.rhai", &[]);
    real.assert_code(0);
    assert_eq!(real.total("changed"), 2);
    assert!(p.root("a").join("motd.link").is_symlink());
}

/// A file whose content is only known after a predicted change is still predicted as created
/// when its destination does not exist (copy's content, a template file reading the result);
/// over an existing file it stays "depends on a change above". The real run then does exactly
/// what was predicted.
fn check_mode_predicts_a_new_file_whose_content_depends_on_a_change_above(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.write("a", "old", "before\n");
    p.file("templates/stamp.j2", "{{ stamp.stdout }}\n");
    p.file(
        "new.rhai",
        r#"
on("all", shell(#{ cmd: "echo 42" }).register("stamp"));
on("all", copy(#{ dest: "{{ root }}/new", content: "{{ stamp.stdout }}" }));
on("all", file_template(#{ src: "templates/stamp.j2", dest: "{{ root }}/new-from-template" }));
on("all", copy(#{ dest: "{{ root }}/old", content: "{{ stamp.stdout }}" }));
"#,
    );
    let check = p.play("new.rhai", &["--check"]);
    check.assert_code(0);
    let ends = check.task_ends();
    let root = p.remote_root("a");
    for (end, file) in [(&ends[1], "new"), (&ends[2], "new-from-template")] {
        assert_eq!(end["status"], "changed", "{}", check.stdout);
        let summary = end["summary"].as_str().unwrap();
        assert!(
            summary.starts_with(&format!(
                "create {root}/{file} (its content depends on a change above: "
            )),
            "{summary}"
        );
    }
    assert_eq!(ends[3]["status"], "skipped", "{}", check.stdout);
    assert!(ends[3]["msg"]
        .as_str()
        .unwrap()
        .starts_with("depends on a change above"));
    assert!(!p.root("a").join("new").exists());
    let real = p.play("new.rhai", &[]);
    real.assert_code(0);
    assert_eq!(real.changed().len(), 4, "{}", real.stdout);
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("new")).unwrap(),
        "42"
    );
}

fn facts_are_gathered_once_and_usable_in_conditions_args_and_templates(p: Project) {
    p.hosts(&["a", "b"], &[]);
    p.mkroot("a");
    p.mkroot("b");
    p.file(
        "templates/info.j2",
        "{{ facts.os_family }} {{ facts.default_ipv4.address }} {{ facts.processor_count }}\n",
    );
    p.file(
        "facts.rhai",
        r#"
on("all", file_template(#{ src: "templates/info.j2", dest: "{{ root }}/facts" }));
on("all", copy(#{ dest: "{{ root }}/family-{{ facts.os_family }}", content: "{{ facts.hostname }}" })
    .when("facts.pkg_mgr in ['apt', 'dnf', 'yum']"));
on("all", copy(#{ dest: "{{ root }}/never", content: "x" }).when("facts.os_family == 'Plan9'"));
on("all", task("facts in rhai", |h| if h.facts.processor_count > 0 { "ok" } else { throw "no cpus" }));
"#,
    );
    let out = p.play("facts.rhai", &[]);
    out.assert_code(0);
    for h in ["a", "b"] {
        let text = std::fs::read_to_string(p.root(h).join("facts")).unwrap();
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields[0], "Debian", "{text}");
        if p.conn == crate::support::Conn::Lab {
            let n = crate::support::Project::lab_host(h)[1..]
                .parse::<u8>()
                .unwrap();
            assert_eq!(fields[1], format!("10.77.0.{}", 10 + n), "{text}");
        }
        assert!(fields[2].parse::<u32>().unwrap() >= 1, "{text}");
        assert!(p.root(h).join("family-Debian").exists());
        assert!(!p.root(h).join("never").exists());
    }
    assert_eq!(out.total("skipped"), 2);
}

/// `quote()` in Rhai: a value put into a shell command arrives byte for byte, not interpreted.
fn a_value_quoted_in_rhai_reaches_the_shell_as_it_is(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.file(
        "quote.rhai",
        r#"
let value = "it's $HOME and `id`; \"both\" | not run";
on("all", shell(#{ cmd: "printf %s " + quote(value) + " > {{ root }}/quoted" }));
"#,
    );
    p.play("quote.rhai", &[]).assert_code(0);
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("quoted")).unwrap(),
        "it's $HOME and `id`; \"both\" | not run"
    );
}

/// The modules the other tests use less: file states, set_fact, debug, fail, assert, print.
fn every_core_module_behaves_the_same(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.write("a", "old", "remove me");
    p.file(
        "core.rhai",
        r#"
print("planning on " + hosts("all").len() + " host(s)");
on("all", [
    file(#{ path: "{{ root }}/d/e", state: "directory", mode: "0750" }),
    file(#{ path: "{{ root }}/old", state: "absent" }),
    file(#{ path: "{{ root }}/d/link", state: "link", src: "e" }),
    copy(#{ dest: "{{ root }}/d/e/f", content: "x", mode: "u=rw,go=r" }),
    copy(#{ dest: "{{ root }}/d/e/h", content: "h" }),
    file(#{ path: "{{ root }}/d/e/h", mode: "0600" }).name("tighten h"),
    set_fact(#{ greeting: "hello", n: 3 }),
    debug(#{ msg: "{{ greeting }} x{{ n }}" }),
    assert(#{ that: ["greeting == 'hello'", "n * 2 == 6"] }),
    lineinfile(#{ path: "{{ root }}/d/e/g", line: "first", create: true }),
    lineinfile(#{ path: "{{ root }}/d/e/g", line: "second", insertafter: "EOF" }),
    lineinfile(#{ path: "{{ root }}/d/e/g", regexp: "^fir", line: "first" }),
    task("print from a task", |h| { print("custom on " + h.name); "ok" }),
    fail(#{ msg: "stop {{ inventory_hostname }}" }).when("n > 5"),
]);
"#,
    );
    let out = p.play("core.rhai", &[]);
    out.assert_code(0);
    let root = p.root("a");
    assert!(!root.join("old").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |rel: &str| {
        std::fs::symlink_metadata(root.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("d/e"), 0o750);
    assert_eq!(mode("d/e/f"), 0o644);
    assert_eq!(mode("d/e/h"), 0o600);
    assert_eq!(
        std::fs::read_link(root.join("d/link")).unwrap().to_str(),
        Some("e")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("d/e/g")).unwrap(),
        "first\nsecond\n"
    );
    let events = out.events();
    let debug = events
        .iter()
        .find(|e| e["event"] == "task_end" && e["module"] == "debug")
        .unwrap();
    assert_eq!(debug["msg"], "hello x3");
    let prints: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "print")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(prints, ["planning on 1 host(s)", "custom on a"]);
    let again = p.play("core.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);

    let failing = p.play("core.rhai", &["-e", "n=9"]);
    failing.assert_code(2);
    let failed: Vec<_> = failing
        .task_ends()
        .into_iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    // Extra vars win even over set_fact (as in Ansible): n stays 9 and the assertion fails.
    assert_eq!(failed[0]["module"], "assert", "{}", failing.stdout);
    assert_eq!(failed[0]["msg"], "Assertion failed: n * 2 == 6");
}

fn a_task_retries_until_a_file_appears_and_gives_up_naming_its_attempts(p: Project) {
    p.hosts(&["a", "b"], &[]);
    for h in ["a", "b"] {
        p.mkroot(h);
    }
    p.file(
        "retry.rhai",
        r#"
on("all", shell(#{ cmd: "nohup sh -c 'sleep 2; touch {{ root }}/ready' >/dev/null 2>&1 &" }));
on("all", shell(#{ cmd: "test -e {{ root }}/ready && echo up", changed_when: false })
    .name("wait ready").register("r").retry_until("r.stdout == 'up'").retries(10).delay(1));
on("all", shell(#{ cmd: "test -e {{ root }}/never" }).name("never").retries(2).delay(0));
"#,
    );
    let out = p.play("retry.rhai", &[]);
    out.assert_code(2);
    let ok = out.tasks_where(|e| e["status"] == "ok" && e["task"] == "wait ready");
    assert_eq!(ok.len(), 2, "{}", out.stdout);
    let retries: Vec<_> = out
        .events()
        .into_iter()
        .filter(|e| e["event"] == "task_retry")
        .collect();
    for h in ["a", "b"] {
        let waits = retries
            .iter()
            .filter(|e| e["host"] == h && e["task"] == "wait ready")
            .count();
        // The file appears after 2 s, tried each second: at least 2 attempts, far fewer than 11.
        assert!(
            (1..=6).contains(&waits),
            "{h}: {waits} retries\n{}",
            out.stdout
        );
        let nevers: Vec<_> = retries
            .iter()
            .filter(|e| e["host"] == h && e["task"] == "never")
            .map(|e| {
                (
                    e["attempt"].as_u64().unwrap(),
                    e["attempts"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(nevers, [(1, 3), (2, 3)]);
    }
    let failed: Vec<_> = out
        .task_ends()
        .into_iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2, "{}", out.stdout);
    for e in failed {
        let msg = e["msg"].as_str().unwrap();
        let host = e["host"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("'never' on {host} gave up after 3 attempts: ")),
            "{msg}"
        );
    }
    // In text, attempts show with -v only.
    p.file(
        "never.rhai",
        "on(\"a\", shell(#{ cmd: \"false\" }).name(\"never\").retries(1).delay(0));\n",
    );
    let text = p.run(&["run", "never.rhai", "-i", "inventory.toml", "-v"]);
    text.assert_code(2);
    assert!(
        text.stdout.contains("never (attempt 1/2, again in 0 s): "),
        "{}",
        text.stdout
    );
    assert!(text
        .stdout
        .contains("'never' on a gave up after 2 attempts"));
    let quiet = p.run(&["run", "never.rhai", "-i", "inventory.toml"]);
    assert!(!quiet.stdout.contains("attempt 1/2"), "{}", quiet.stdout);
}

fn run_once_timeout_and_environment(p: Project) {
    p.hosts(&["a", "b"], &[]);
    for h in ["a", "b"] {
        p.mkroot(h);
    }
    p.file(
        "control.rhai",
        r#"
on("all", shell(#{ cmd: "printf '%s %s' \"$GREETING\" \"$WHO\" > {{ root }}/env" })
    .environment(#{ GREETING: "it's $HOME", WHO: "{{ inventory_hostname }}" }));
on("all", shell(#{ cmd: "touch {{ root }}/once; echo {{ inventory_hostname }}" })
    .name("once").run_once().register("o"));
on("all", copy(#{ dest: "{{ root }}/seen", content: "{{ o.stdout }}" }));
on("all", shell(#{ cmd: "sleep 3; touch {{ root }}/late" }).name("slow").timeout(1)
    .ignore_errors(true));
"#,
    );
    let started = std::time::Instant::now();
    let out = p.play("control.rhai", &[]);
    out.assert_code(0);
    assert!(started.elapsed() < std::time::Duration::from_millis(2900));
    for h in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("env")).unwrap(),
            format!("it's $HOME {h}")
        );
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("seen")).unwrap(),
            "a",
            "the run_once result reached {h}"
        );
    }
    assert!(p.root("a").join("once").exists());
    assert!(!p.root("b").join("once").exists(), "run_once ran on b");
    assert_eq!(
        out.tasks_where(|e| e["task"] == "once"),
        [("a".to_string(), "once".to_string())]
    );
    let timed_out = out.tasks_where(|e| {
        e["status"] == "failed"
            && e["msg"]
                .as_str()
                .is_some_and(|m| m.contains("timed out after 1 s"))
    });
    assert_eq!(timed_out.len(), 2, "{}", out.stdout);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for h in ["a", "b"] {
        assert!(
            !p.root(h).join("late").exists(),
            "the timed-out command went on on {h}"
        );
    }
}

fn become_per_task_runs_one_task_as_another_user(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.file(
        "become.rhai",
        r#"
on("a", shell(#{ cmd: "id -un", changed_when: false }).become(true).become_user("nobody")
    .register("as_nobody"));
on("a", shell(#{ cmd: "id -un", changed_when: false }).register("as_is"));
on("a", copy(#{ dest: "{{ root }}/who", content: "{{ as_nobody.stdout }} {{ as_is.stdout }}" }));
"#,
    );
    let out = p.play("become.rhai", &[]);
    out.assert_code(0);
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // Over SSH the lab's user is root, as the test runner is on CI.
    let connecting = if p.remote_root("a").starts_with("/opt/") {
        "root"
    } else {
        me.trim()
    };
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("who")).unwrap(),
        format!("nobody {connecting}")
    );
}

/// Group variables whose values are templates (kubespray's group_vars are full of them) render
/// when a template reads them, recursively, each host's with its own variables, numbers staying
/// numbers; what a task registered is never rendered again.
fn templated_variables_render_when_read_as_ansible_renders_them(p: Project) {
    p.hosts(&["a", "b"], &[("web", &["a", "b"][..])]);
    let inv = std::fs::read_to_string(p.path().join("inventory.toml")).unwrap();
    p.file(
        "inventory.toml",
        &format!(
            r#"{inv}
[groups.web.vars]
base_port = 6440
api_port = "{{{{ base_port + 3 }}}}"
api_endpoint = "https://{{{{ vip | default(inventory_hostname) }}}}:{{{{ api_port }}}}"
mode = "{{%- if groups['web'] | length > 1 -%}}ha{{%- else -%}}single{{%- endif -%}}"
addr = "{{{{ inventory_hostname }}}}.local"
etcd_peers = "{{% for h in groups['web'] %}}{{{{ h }}}}=https://{{{{ hostvars[h].addr }}}}:2380{{% if not loop.last %}},{{% endif %}}{{% endfor %}}"
seen = "{{{{ out.stdout }}}}"
"#
        ),
    );
    p.file(
        "templates/t.j2",
        "api={{ api_endpoint }}\nnext={{ api_port + 1 }}\nmode={{ mode }}\npeers={{ etcd_peers }}\nout={{ out.stdout }}\n",
    );
    p.file(
        "site.rhai",
        r#"
phase("p", || {
    on("web", shell(#{ cmd: "printf '%s%s' '{' '{ base_port }}'", changed_when: false }).register("out"));
    on("web", file_template(#{ src: "templates/t.j2", dest: "{{ root }}/t" }));
    on("web", copy(#{ dest: "{{ root }}/seen", content: "{{ seen }}" }));
});
"#,
    );
    p.mkroot("a");
    p.mkroot("b");
    p.play("site.rhai", &[]).assert_code(0);
    for h in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("t")).unwrap(),
            format!(
                "api=https://{h}:6443\nnext=6444\nmode=ha\n\
                 peers=a=https://a.local:2380,b=https://b.local:2380\nout={{{{ base_port }}}}\n"
            )
        );
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("seen")).unwrap(),
            "{{ base_port }}"
        );
    }
}

fn command_output_is_kept_bounded_and_shown_lines_are_capped(p: Project) {
    p.hosts(&["a"], &[]);
    p.mkroot("a");
    p.file(
        "big.rhai",
        r#"
on("a", shell(#{ cmd: "head -c 300000 /dev/zero | tr '\\0' x; printf END" }).register("big"));
on("a", copy(#{ dest: "{{ root }}/big", content: "{{ big.stdout }}" }));
on("a", assert(#{ that: ["big.stdout_cut == 234467", "big.stderr_cut == 0"] }));
on("a", shell(#{ cmd: "seq 1 10000; printf 'tab\\there \\303\\251\\n'" }).register("small"));
on("a", copy(#{ dest: "{{ root }}/small", content: "{{ small.stdout }}" }));
on("a", assert(#{ that: ["small.stdout_cut == 0"] }));
"#,
    );
    p.play("big.rhai", &["--keep-output", "64K"]).assert_code(0);
    // 300003 bytes: the first and last 32 KiB are kept, the 234467 between them counted.
    let big = std::fs::read_to_string(p.root("a").join("big")).unwrap();
    let want = format!(
        "{}\n[playbook: 234467 bytes of output cut here (--keep-output)]\n{}END",
        "x".repeat(32768),
        "x".repeat(32765)
    );
    assert!(
        big == want,
        "kept {} bytes, not head + note + tail",
        big.len()
    );
    // Under the limit, the output is the command's, byte for byte (less its last newline).
    let small = std::fs::read(p.root("a").join("small")).unwrap();
    let mut want: Vec<u8> = (1..=10000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    want.extend_from_slice("tab\there é".as_bytes());
    assert_eq!(small, want);

    // A failing command whose output is one 20 MB line: its message shows the line capped.
    p.file(
        "fail.rhai",
        r#"on("a", shell(#{ cmd: "head -c 20000000 /dev/zero | tr '\\0' y; echo; exit 1" }));"#,
    );
    let json = p.play("fail.rhai", &[]);
    json.assert_code(2);
    let failed = json.tasks_where(|e| e["status"] == "failed");
    assert_eq!(failed.len(), 1);
    let msg = json
        .task_ends()
        .into_iter()
        .find(|e| e["status"] == "failed")
        .unwrap()["msg"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("failed with rc 1"), "{msg}");
    assert!(msg.contains("bytes of output cut here"), "{msg}");
    assert!(msg.contains("more bytes of this line not shown"), "{msg}");
    assert!(msg.lines().all(|l| l.len() < 1100), "{msg}");
    assert!(
        json.stdout.len() < 20_000,
        "{} bytes of JSON",
        json.stdout.len()
    );
    let text = p.run(&["run", "fail.rhai", "-i", "inventory.toml"]);
    assert_eq!(text.code, 2);
    assert!(text.stdout.contains("more bytes of this line not shown"));
    assert!(
        text.stdout.len() < 20_000,
        "{} bytes of text",
        text.stdout.len()
    );
}
/// Six hosts: the ssh variant needs the lab's h1..h6.
mod rolling {
    use crate::support::{Conn, Project};

    #[test]
    fn local() {
        super::a_rolling_change_stops_after_the_batch_where_a_host_failed(Project::new(
            Conn::Local,
        ));
    }

    #[test]
    fn ssh() {
        if let Some(p) = Project::lab_of("rolling::ssh", 6) {
            super::a_rolling_change_stops_after_the_batch_where_a_host_failed(p);
        }
    }
}

fn a_rolling_change_stops_after_the_batch_where_a_host_failed(p: Project) {
    let hosts = ["a", "b", "c", "d", "e", "f"];
    p.hosts(&hosts, &[]);
    for h in hosts {
        p.mkroot(h);
    }
    p.write("d", "broken", "");
    p.file(
        "rolling.rhai",
        r#"
phase("upgrade", || {
    serial(2);
    max_fail_percentage(0);
    on("all", [
        copy(#{ dest: "{{ root }}/version", content: "2\n" }).notify("restart"),
        shell(#{ cmd: "test ! -e {{ root }}/broken", changed_when: false })
            .name("health check").check_mode(false),
    ]);
    handler("restart", shell(#{ cmd: "echo restart >> {{ root }}/restarts" }));
});
phase("report", || {
    on("all", copy(#{ dest: "{{ root }}/reported", content: "yes\n" }));
});
"#,
    );
    let read = |h: &str, f: &str| std::fs::read_to_string(p.root(h).join(f)).ok();
    let files = || -> Vec<Vec<Option<String>>> {
        hosts
            .iter()
            .map(|h| {
                ["version", "restarts", "reported"]
                    .iter()
                    .map(|f| read(h, f))
                    .collect()
            })
            .collect()
    };
    let before = files();
    // Check mode goes through the same batches and changes nothing.
    let check = p.play("rolling.rhai", &["--check"]);
    let batches = |out: &crate::support::Output| -> Vec<Vec<String>> {
        out.events()
            .into_iter()
            .filter(|e| e["event"] == "batch_start")
            .map(|e| serde_json::from_value(e["hosts"].clone()).unwrap())
            .collect()
    };
    assert_eq!(
        batches(&check),
        [["a", "b"], ["c", "d"], ["e", "f"]],
        "{}",
        check.stdout
    );
    assert_eq!(files(), before, "check mode changed a file");

    let out = p.play("rolling.rhai", &[]);
    out.assert_code(2);
    assert_eq!(batches(&out), [["a", "b"], ["c", "d"]], "{}", out.stdout);
    let v = Some("2\n".to_string());
    let r = Some("restart\n".to_string());
    for h in ["a", "b", "c"] {
        assert_eq!(read(h, "version"), v, "{h}");
        assert_eq!(read(h, "restarts"), r, "{h}: its batch's handler ran");
        assert_eq!(read(h, "reported"), None, "{h}: no later phase runs");
    }
    assert_eq!(read("d", "version"), v);
    assert_eq!(read("d", "restarts"), None, "a failed host runs no handler");
    for h in ["e", "f"] {
        assert_eq!(
            std::fs::read_dir(p.root(h)).unwrap().count(),
            0,
            "{h} was touched"
        );
    }
    let recap = out.recap();
    assert_eq!(recap["not_reached"], serde_json::json!(["e", "f"]));
    assert!(
        recap["stopped"].as_str().unwrap().starts_with(
            "phase 'upgrade' stopped after batch 2 of 3: 1 of 2 host(s) of the batch failed (d)"
        ),
        "{recap}"
    );
    let stop: Vec<_> = out
        .events()
        .into_iter()
        .filter(|e| e["event"] == "rollout_stop")
        .collect();
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0]["failed"], serde_json::json!(["d"]));
    assert_eq!(stop[0]["batch"], 2);

    // The text recap names the hosts the rollout did not reach.
    let text = p.run(&["run", "rolling.rhai", "-i", "inventory.toml"]);
    text.assert_code(2);
    assert!(
        text.stdout
            .contains("not reached (no task ran there): e, f"),
        "{}",
        text.stdout
    );

    // Once d is fixed the rollout goes through, then changes nothing.
    unbreak(&p, "d");
    let fixed = p.play("rolling.rhai", &[]);
    fixed.assert_code(0);
    for h in hosts {
        assert_eq!(read(h, "version"), v, "{h}");
        assert_eq!(read(h, "reported"), Some("yes\n".into()), "{h}");
    }
    assert_eq!(read("e", "restarts"), r);
    assert_eq!(
        read("d", "restarts"),
        r,
        "d's restart, owed since its failure, ran once d was fixed"
    );
    let again = p.play("rolling.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
}

fn rescue_runs_on_failure_and_always_runs_in_both_cases(p: Project) {
    p.hosts(&["a", "b", "c"], &[("ab", &["a", "b"])]);
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    p.write("b", "broken", "");
    p.file(
        "block.rhai",
        r#"
on("ab", block([
    copy(#{ dest: "{{ root }}/started", content: "1\n" }),
    shell(#{ cmd: "test ! -e {{ root }}/broken", changed_when: false }).name("may fail"),
    copy(#{ dest: "{{ root }}/finished", content: "1\n" }).name("after the failure"),
]).rescue([
    copy(#{ dest: "{{ root }}/rescued", content: "1\n" }).name("rescue"),
]).always([
    shell(#{ cmd: "echo always >> {{ root }}/always" }).name("always"),
]));
on("c", block([shell(#{ cmd: "false" }).name("fails")])
    .rescue([shell(#{ cmd: "false" }).name("rescue fails")])
    .always([copy(#{ dest: "{{ root }}/always", content: "always\n" }).name("always on c")]));
on("all", copy(#{ dest: "{{ root }}/next", content: "1\n" }).name("next"));
"#,
    );
    let out = p.play("block.rhai", &[]);
    out.assert_code(2);
    let has = |h: &str, f: &str| p.root(h).join(f).exists();
    for h in ["a", "b"] {
        assert!(has(h, "started") && has(h, "next"), "{h} went on");
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("always")).unwrap(),
            "always\n",
            "always ran once on {h}"
        );
    }
    assert!(
        has("a", "finished") && !has("a", "rescued"),
        "no rescue without a failure"
    );
    assert!(!has("b", "finished"), "the body stops at its failure");
    assert!(has("b", "rescued"));
    // A failed rescue fails the host, after its always tasks.
    assert!(has("c", "always") && !has("c", "next"));
    let recap = out.recap();
    let counts = |h: &str, k: &str| recap["hosts"][h][k].as_u64().unwrap();
    assert_eq!((counts("b", "failed"), counts("b", "rescued")), (0, 1));
    assert_eq!((counts("a", "failed"), counts("a", "rescued")), (0, 0));
    assert_eq!((counts("c", "failed"), counts("c", "rescued")), (1, 1));
    let ends = out.tasks_where(|e| e["rescued"] == true);
    assert_eq!(
        ends,
        [
            ("b".to_string(), "may fail".to_string()),
            ("c".to_string(), "fails".to_string())
        ]
    );
    // Converged, with b still broken: the rescue and always run again, nothing else changes.
    let again = p.play("block.rhai", &[]);
    again.assert_code(2);
    assert_eq!(
        again.changed(),
        [
            ("a".to_string(), "always".to_string()),
            ("b".to_string(), "always".to_string()),
        ],
        "{}",
        again.stdout
    );
}

fn a_handler_notified_before_a_failure_runs_in_the_next_run(p: Project) {
    p.hosts(&["a", "b", "c"], &[]);
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    p.write("b", "broken", "");
    p.file(
        "deploy.rhai",
        r#"
phase("deploy", || {
    on("a:b", [
        copy(#{ dest: "{{ root }}/conf", content: "v1\n" }).notify("restart"),
        shell(#{ cmd: "test ! -e {{ root }}/broken", changed_when: false }).name("check"),
    ]);
    handler("restart", shell(#{ cmd: "echo restart >> {{ root }}/restarts" }));
});
"#,
    );
    let restarts = |h: &str| std::fs::read_to_string(p.root(h).join("restarts")).ok();
    let once = Some("restart\n".to_string());
    p.play("deploy.rhai", &[]).assert_code(2);
    assert_eq!(restarts("a"), once);
    assert_eq!(restarts("b"), None, "b failed before its handler");
    let state = p.path().join(".playbook/inventory.toml.handlers.json");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        saved.contains("\"b\"") && !saved.contains("\"a\""),
        "{saved}"
    );

    // Check mode predicts the owed handler and leaves it owed.
    let check = p.play("deploy.rhai", &["--check"]);
    assert_eq!(restarts("b"), None);
    assert!(check
        .changed()
        .contains(&("b".to_string(), "restart".to_string())));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), saved);

    unbreak(&p, "b");
    // b's conf is already written: nothing notifies now, yet the owed restart runs.
    let next = p.play("deploy.rhai", &[]);
    next.assert_code(0);
    assert_eq!(
        next.changed(),
        [("b".to_string(), "restart".to_string())],
        "{}",
        next.stdout
    );
    assert_eq!(restarts("a"), once);
    assert_eq!(restarts("b"), once);
    let again = p.play("deploy.rhai", &[]);
    again.assert_code(0);
    assert_eq!(
        again.total("changed"),
        0,
        "the debt is paid: {}",
        again.stdout
    );

    // --force-handlers runs it at once, in the failing run.
    p.file(
        "force.rhai",
        r#"
on("c", [
    copy(#{ dest: "{{ root }}/conf", content: "v1\n" }).notify("restart"),
    shell(#{ cmd: "false" }).name("fails"),
]);
handler("restart", shell(#{ cmd: "echo restart >> {{ root }}/restarts" }));
"#,
    );
    p.play("force.rhai", &["--force-handlers"]).assert_code(2);
    assert_eq!(restarts("c"), once);
    p.play("force.rhai", &[]).assert_code(2);
    assert_eq!(restarts("c"), once, "nothing was owed");
}

/// Removes the `broken` file a test wrote under the host's root, on the host.
fn unbreak(p: &Project, host: &str) {
    match p.conn {
        Conn::Local => std::fs::remove_file(p.root(host).join("broken")).unwrap(),
        Conn::Lab => {
            crate::support::lab_exec(
                &Project::lab_host(host),
                &format!("rm {}/broken", p.remote_root(host)),
            );
        }
    }
}

/// Whether a process whose command line is exactly `cmdline` runs on this machine.
fn runs_here(cmdline: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-x", "-f", cmdline])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Ctrl-C ends what the interrupted command started (a child of its shell, which the local
/// connection's kill of the shell alone would leave running), and only that: a daemon an earlier,
/// finished command left running is not the run's to stop.
#[test]
fn ctrl_c_ends_the_interrupted_command_and_leaves_finished_ones_daemons() {
    // Durations no other test uses, so pgrep finds only this test's processes.
    let (daemon, interrupted) = ("sleep 47.25", "sleep 47.75");
    let p = Project::new(Conn::Local);
    p.hosts(&["a"], &[]);
    p.file(
        "site.rhai",
        &format!(
            r#"
on("all", shell(#{{ cmd: "nohup {daemon} >/dev/null 2>&1 &" }}).name("start a daemon"));
on("all", shell(#{{ cmd: "{interrupted}; echo late > {{{{ root }}}}/late" }}).name("long sleep"));
"#
        ),
    );
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_playbook"))
        .current_dir(p.path())
        .args(["run", "site.rhai", "-i", "inventory.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while !runs_here(interrupted) {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "the long command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stopped = std::process::Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = run.wait().unwrap();
    let daemon_survived = runs_here(daemon);
    let _ = std::process::Command::new("pkill")
        .args(["-x", "-f", daemon])
        .status();
    assert_eq!(status.code(), Some(130));
    assert!(
        !runs_here(interrupted),
        "the interrupted command still runs after the run ended"
    );
    assert!(
        daemon_survived,
        "the daemon of a finished command was stopped"
    );
    assert!(!p.root("a").join("late").exists());
}

/// Output lines show task names with their templates rendered for the line's host, in text and
/// JSON; a name that cannot be rendered yet stays as written; a failure's message does not
/// repeat the command its default name already shows.
#[test]
fn task_names_render_per_host_and_failures_do_not_repeat_the_command() {
    let p = Project::new(Conn::Local);
    p.hosts(&["a", "b"], &[]);
    p.file(
        "site.rhai",
        r#"
on("all", file(#{ path: "{{ root }}/etc", state: "directory" }));
on("all", shell(#{ cmd: "echo x" }).name("uses {{ later.stdout }} before it exists"));
on("all", shell(#{ cmd: "echo 3" }).register("later"));
on(first("all"), command(#{ argv: ["sh", "-c", "echo oops >&2; exit 3"] }));
"#,
    );
    let text = p.run(&["run", "site.rhai", "-i", "inventory.toml"]);
    text.assert_code(2);
    for h in ["a", "b"] {
        let root = p.root(h).display().to_string();
        let line = format!("changed       {h}  file: {root}/etc — ");
        assert!(
            text.stdout.contains(&line),
            "no line {line:?}:\n{}",
            text.stdout
        );
    }
    assert!(!text.stdout.contains("{{ root }}"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("uses {{ later.stdout }} before it exists"),
        "{}",
        text.stdout
    );
    let failed = text
        .stdout
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .expect("a FAILED line");
    assert_eq!(
        failed, "FAILED        a  command: sh -c 'echo oops >&2; exit 3': failed with rc 3",
        "{}",
        text.stdout
    );
    let json = p.play("site.rhai", &[]);
    let names: Vec<String> = json
        .task_ends()
        .iter()
        .filter(|e| e["host"] == "b")
        .map(|e| e["task"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names[0],
        format!("file: {}/etc", p.root("b").display()),
        "{names:?}"
    );
}
