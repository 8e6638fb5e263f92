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

/// Template mistakes are bad input too: found while planning, before the first task runs.
#[test]
fn undefined_name_in_a_template_file_is_refused_before_any_host_is_touched() {
    let p = project(
        "on(\"all\", file_template(#{ src: \"templates/t.j2\", dest: \"{{ root }}/t\" }));\n",
    );
    p.file("templates/t.j2", "line one\nvalue = {{ missing_var }}\n");
    expect_error(
        &p,
        &[],
        &["bad.rhai:2:11", "reads 'missing_var'", "is defined"],
    );
}

#[test]
fn a_name_read_through_a_templated_variable_is_checked_too() {
    let p = project("on(\"all\", copy(#{ dest: \"{{ root }}/c\", content: \"{{ dsn }}\" }));\n");
    let inv = std::fs::read_to_string(p.path().join("inventory.toml")).unwrap();
    p.file(
        "inventory.toml",
        &format!("{inv}\n[vars]\ndsn = \"db://{{{{ db_hots }}}}\"\ndb_host = \"x\"\n"),
    );
    expect_error(
        &p,
        &[],
        &[
            "reads 'dsn', whose value \"db://{{ db_hots }}\" reads 'db_hots'",
            "did you mean 'db_host'",
        ],
    );
}

#[test]
fn a_mistyped_variable_gets_did_you_mean() {
    let p =
        project("on(\"all\", copy(#{ dest: \"{{ root }}/c\", content: \"{{ db_pasword }}\" }));\n");
    p.file(
        "inventory.toml",
        &format!(
            "{}\n[vars]\ndb_password = \"x\"\n",
            std::fs::read_to_string(p.path().join("inventory.toml")).unwrap()
        ),
    );
    expect_error(
        &p,
        &[],
        &[
            "bad.rhai:2:11",
            "'db_pasword'",
            "did you mean 'db_password'?",
        ],
    );
}

#[test]
fn template_syntax_errors_name_the_place() {
    let p = project("on(\"all\", copy(#{ dest: \"{{ root }}/c\", content: \"{{ root \" }));\n");
    expect_error(&p, &[], &["bad.rhai:2:11", "an argument", "syntax error"]);
    let p = project(
        "on(\"all\", file_template(#{ src: \"templates/t.j2\", dest: \"{{ root }}/t\" }));\n",
    );
    p.file("templates/t.j2", "a\n{% if root %}\nb\n");
    expect_error(&p, &[], &["templates/t.j2", "syntax error"]);
    let p = project("on(\"all\", shell(#{ cmd: \"true\" }).when(\"root ==\"));\n");
    expect_error(&p, &[], &["bad.rhai:2:11", "its condition"]);
}

#[test]
fn a_missing_template_file_is_refused_before_any_host_is_touched() {
    let p = project(
        "on(\"all\", file_template(#{ src: \"templates/none.j2\", dest: \"{{ root }}/t\" }));\n",
    );
    expect_error(&p, &[], &["bad.rhai:2:11", "templates/none.j2"]);
}

/// What a run can provide is not refused: guarded names, registered results, set_fact keys,
/// extra vars, facts, and names a closure condition may guard.
#[test]
fn names_a_run_provides_or_guards_are_accepted() {
    let p = project(
        "on(\"all\", shell(#{ cmd: \"echo hi\" }).register(\"out\"));\n\
         on(\"all\", set_fact(#{ later: \"x\" }));\n\
         on(\"all\", copy(#{ dest: \"{{ root }}/c\", content: \"{{ out.stdout }} {{ later }} {{ extra }} {{ facts.os_family | default('') }} {{ opt | default('none') }}\" }));\n\
         on(\"all\", copy(#{ dest: \"{{ root }}/d\", content: \"{{ maybe }}\" }).when(\"maybe is defined\"));\n\
         on(\"all\", copy(#{ dest: \"{{ root }}/e\", content: \"{{ anything }}\" }).when(|h| false));\n",
    );
    let out = p.play("bad.rhai", &["-e", "extra=1"]);
    out.assert_code(0);
    let c = std::fs::read_to_string(p.root("a").join("c")).unwrap();
    assert!(c.starts_with("hi x 1 "), "{c}");
    assert!(c.ends_with(" none"), "{c}");
    assert!(!p.root("a").join("d").exists());
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

/// A value made on a host --limit excludes cannot be read: said while planning, with the fix.
#[test]
fn limit_excluding_the_producer_of_a_read_value_names_the_hosts_to_add() {
    let p = project(
        "let tok = on(\"a\", shell(#{ cmd: \"echo t\" }).name(\"read token\"));\n\
         on(\"b\", copy(#{ dest: \"{{ root }}/t\", content: tok.stdout }).name(\"use token\"));\n",
    );
    expect_error(
        &p,
        &["--limit", "b"],
        &[
            "bad.rhai:3:9",
            "'use token' reads the result of 'read token', which runs on a, outside --limit",
            "add a to --limit",
        ],
    );
    let both = p.play("bad.rhai", &["--limit", "a:b"]);
    both.assert_code(0);
    assert_eq!(std::fs::read_to_string(p.root("b").join("t")).unwrap(), "t");
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

/// Through a symbolic link as through `..`: imports and templates refuse it alike.
#[test]
fn import_through_a_link_out_of_the_playbook_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("lib.rhai"), "fn f() { 1 }\n").unwrap();
    let p = project("import \"shared/lib\" as x;\n");
    std::os::unix::fs::symlink(outside.path(), p.path().join("shared")).unwrap();
    expect_error(
        &p,
        &[],
        &[
            "bad.rhai:2",
            "outside the playbook's directory",
            "symbolic link",
        ],
    );
    let t =
        project("on(\"all\", file_template(#{ src: \"shared/t.j2\", dest: \"{{ root }}/t\" }));\n");
    std::fs::write(outside.path().join("t.j2"), "x\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("shared")).unwrap();
    expect_error(&t, &[], &["outside the playbook directory"]);
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

#[test]
fn rollout_settings_are_checked_where_they_are_written() {
    let p = project("phase(\"up\", || {\n    serial([2, \"0%\"]);\n});\n");
    expect_error(
        &p,
        &[],
        &["bad.rhai:3:5", "serial(\"0%\"): a percentage is 1% to 100%"],
    );
    let p = project("phase(\"up\", || { serial(0); });\n");
    expect_error(&p, &[], &["bad.rhai:2:18", "a number of hosts (1 or more)"]);
    let p = project("phase(\"up\", || { serial(1); serial(2); });\n");
    expect_error(
        &p,
        &[],
        &["bad.rhai:2:29", "serial() is set twice in phase 'up'"],
    );
    let p = project("max_fail_percentage(10);\n");
    expect_error(
        &p,
        &[],
        &["bad.rhai:2:1", "call it inside phase(\"name\", || { ... })"],
    );
    let p = project("phase(\"up\", || { max_fail_percentage(101); });\n");
    expect_error(
        &p,
        &[],
        &["max_fail_percentage(101): a percentage is 0 to 100"],
    );
}

#[test]
fn a_task_cannot_wait_for_one_after_a_flush_of_its_phase() {
    let p = project(
        "phase(\"p\", || {\n    on(\"a\", shell(#{ cmd: \"true\" }).name(\"x\").after(\"y\"));\n    flush_handlers();\n    on(\"a\", shell(#{ cmd: \"true\" }).name(\"y\"));\n});\n",
    );
    expect_error(
        &p,
        &[],
        &[
            "bad.rhai:3:",
            "task 'x' waits for 'y' (line 5), which comes after a flush_handlers()",
        ],
    );
}
