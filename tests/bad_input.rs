//! Bad input: each case is a clear error with the place it points at, exit code 1, and no host
//! touched (every playbook here would create `touched` first if it ran).

use crate::support::{Conn, Project};

const TOUCH: &str = "on(\"all\", file(#{ path: \"{{ root }}/touched\", state: \"touch\" }));\n";

fn project(playbook: &str) -> Project {
    let p = Project::new(Conn::Local);
    p.hosts(&["a", "b"], &[("web", &["a", "b"])]);
    p.mkroot("a");
    p.mkroot("b");
    p.file("bad.rhai", &format!("{TOUCH}{playbook}"));
    p
}

/// Runs bad.rhai, expects exit 1 with `needle` in stderr, and checks no host was touched.
fn expect_error(p: &Project, args: &[&str], needles: &[&str]) -> String {
    let mut full = vec!["run", "bad.rhai", "-i", "inventory.toml"];
    full.extend_from_slice(args);
    let out = p.run(&full);
    out.assert_code(1);
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "expected {n:?} in stderr:\n{}",
            out.stderr
        );
    }
    for h in ["a", "b"] {
        assert!(!p.root(h).join("touched").exists(), "a host was touched");
    }
    out.stderr
}

#[test]
fn rhai_syntax_error_names_file_line_and_column() {
    let p = project("let x = ;\n");
    expect_error(&p, &[], &["bad.rhai:2:9", "syntax error"]);
}

#[test]
fn unknown_module_suggests_the_closest_name() {
    let p = project("on(\"all\", shel(#{ cmd: \"true\" }));\n");
    expect_error(
        &p,
        &[],
        &[
            "bad.rhai:2:11",
            "unknown function or module 'shel'",
            "did you mean 'shell'?",
        ],
    );
}

#[test]
fn unknown_argument_lists_the_accepted_ones() {
    let p = project("on(\"all\", copy(#{ dst: \"/tmp/x\", content: \"x\" }));\n");
    expect_error(
        &p,
        &[],
        &["bad.rhai:2:11", "copy: unknown field `dst`", "`dest`"],
    );
}

#[test]
fn mistyped_argument_names_the_field() {
    let p =
        project("on(\"all\", copy(#{ dest: \"/tmp/x\", content: \"x\", backup: \"maybe\" }));\n");
    expect_error(&p, &[], &["bad.rhai:2:11", "backup"]);
}

#[test]
fn dependency_cycle_names_every_task_with_its_line() {
    let p = project(
        "on(\"a\", shell(#{ cmd: \"true\" }).name(\"first\").after(\"second\"));\n\
         on(\"b\", shell(#{ cmd: \"true\" }).name(\"second\").after(\"first\"));\n",
    );
    expect_error(
        &p,
        &[],
        &["dependency cycle", "'first' (line 2)", "'second' (line 3)"],
    );
}

#[test]
fn undefined_template_variable_names_the_template_file_and_line() {
    let p = project(
        "on(\"all\", file_template(#{ src: \"templates/t.j2\", dest: \"{{ root }}/t\" }));\n",
    );
    p.file("templates/t.j2", "line one\nvalue = {{ missing_var }}\n");
    let out = p.play("bad.rhai", &[]);
    // Templates render on the host at run time: the task fails (exit 2) and names the place.
    out.assert_code(2);
    let failed: Vec<_> = out
        .task_ends()
        .into_iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2);
    let msg = failed[0]["msg"].as_str().unwrap();
    assert!(msg.contains("templates/t.j2:2"), "{msg}");
    assert!(msg.contains("missing_var"), "{msg}");
    assert!(!p.root("a").join("t").exists());
}

#[test]
fn toml_inventory_error_names_file_line_and_column() {
    let p = project("");
    p.file(
        "inventory.toml",
        "[hosts.a]\nconnection = \"local\"\nport = \"twenty\"\n",
    );
    expect_error(&p, &[], &["inventory.toml:3:8"]);
}

#[test]
fn limit_matching_no_host_is_an_error() {
    let p = project("");
    expect_error(
        &p,
        &["--limit", "web:&nothing*"],
        &["--limit", "matches no host"],
    );
}

#[test]
fn notify_of_an_unknown_handler_is_an_error() {
    let p = project("on(\"all\", shell(#{ cmd: \"true\" }).notify(\"restart hapoxy\"));\nhandler(\"restart haproxy\", shell(#{ cmd: \"true\" }));\n");
    expect_error(
        &p,
        &[],
        &[
            "bad.rhai:2:11",
            "restart hapoxy",
            "did you mean 'restart haproxy'?",
        ],
    );
}

#[test]
fn import_outside_the_playbook_directory_is_refused() {
    let p = project("import \"../../etc/passwd\" as x;\n");
    expect_error(&p, &[], &["bad.rhai:2", "outside the playbook's directory"]);
}

#[test]
fn endless_loop_is_stopped() {
    let p = project("loop { }\n");
    expect_error(&p, &[], &["bad.rhai:2", "operations"]);
}

#[test]
fn a_module_named_by_a_rhai_keyword_reports_its_own_position() {
    let p = project("on(\"all\", debug(#{ mesage: \"hi\" }));\n");
    expect_error(
        &p,
        &[],
        &["bad.rhai:2:11", "debug: unknown field `mesage`", "`msg`"],
    );
}

/// With `--output json`, bad input is also one structured event on stdout, naming the place.
#[test]
fn bad_input_is_one_json_error_event() {
    let p = project("on(\"web\", nosuch(#{}));\n");
    let out = p.play("bad.rhai", &[]);
    out.assert_code(1);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{}", out.stdout);
    let e = &events[0];
    assert_eq!(e["event"], "error");
    assert_eq!(e["kind"], "bad_input");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(11))
    );
    assert!(e["file"].as_str().unwrap().ends_with("bad.rhai"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("nosuch"), "{e}");

    std::fs::write(p.path().join("inventory.toml"), "[hosts.a]\nport = \"x\"\n").unwrap();
    let out = p.play("bad.rhai", &[]);
    out.assert_code(1);
    let e: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        (e["event"].as_str(), e["line"].as_u64()),
        (Some("error"), Some(2)),
        "{e}"
    );
}

#[test]
fn bad_execution_control_options_name_their_place() {
    for (option, needle) in [
        (
            "retries(-1)",
            "retries(-1): the number of tries after the first is 0 or more",
        ),
        (
            "delay(-2)",
            "delay(-2): seconds between tries are 0 or more",
        ),
        ("timeout(0)", "timeout(0): a task needs at least one second"),
        (
            "environment(#{ \"A-B\": \"x\" })",
            "environment: 'A-B' is not a variable name",
        ),
        (
            "environment(#{ A: [1] })",
            "environment: the value of A is a array, not a string",
        ),
        ("become_user(\"\")", "become_user(\"\"): name a user"),
        (
            "delegate_to(\"c\")",
            "delegate_to(\"c\"): no such host in the inventory; did you mean 'a'?",
        ),
    ] {
        let p = project(&format!(
            "on(\"all\", shell(#{{ cmd: \"true\" }}).name(\"t\").{option});\n"
        ));
        let col = format!(
            "bad.rhai:2:{}",
            "on(\"all\", shell(#{ cmd: \"true\" }).name(\"t\").".len() + 1
        );
        expect_error(&p, &[], &[&col, needle]);
    }
}

#[test]
fn until_as_in_ansible_points_to_retry_until() {
    let p = project("on(\"all\", shell(#{ cmd: \"true\" }).retries(2).until(\"x\"));\n");
    expect_error(&p, &[], &["bad.rhai:2:", "use .retry_until"]);
    let p = project("on(\"all\", shell(#{ cmd: \"true\" }).retrys(2));\n");
    expect_error(&p, &[], &["did you mean 'retries'?"]);
}
