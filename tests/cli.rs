//! The commands besides `run`: plan, graph, inventory, doc. None of them touches a host.

use crate::support::{Conn, Project};

fn project() -> Project {
    let p = Project::new(Conn::Local);
    p.hosts(
        &["a", "b", "c"],
        &[("web", &["a", "b"][..]), ("db", &["c"][..])],
    );
    p.file(
        "site.rhai",
        r#"
phase("prepare", || {
    on("web", copy(#{ dest: "{{ root }}/x", content: "x" }).name("write x").tags(["files"]));
    on(first("web"), shell(#{ cmd: "echo hi" }).name("say hi").register("hi").notify("react"));
    handler("react", shell(#{ cmd: "true" }));
});
phase("use", || {
    on("db", copy(#{ dest: "{{ root }}/hi", content: "{{ hi.stdout }}" }).name("write hi"));
});
"#,
    );
    p
}

#[test]
fn plan_lists_phases_tasks_hosts_and_dependencies_without_touching_hosts() {
    let p = project();
    let out = p.run(&["plan", "site.rhai", "-i", "inventory.toml"]);
    out.assert_code(0);
    let text = &out.stdout;
    for needle in [
        "phase prepare",
        "[0] write x  (copy at line 3)",
        "on: a, b",
        "tags: files",
        "[1] say hi  (shell at line 4)",
        "on: a\n",
        "notifies: react",
        "[2] react (handler)",
        "phase use",
        "[3] write hi  (copy at line 8)",
        "on: c",
        "after: [1] say hi",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
    assert!(!p.root("a").exists(), "plan touched a host");
    let limited = p.run(&["plan", "site.rhai", "-i", "inventory.toml", "--limit", "a"]);
    limited.assert_code(0);
    assert!(
        limited.stdout.contains("no host (--limit)"),
        "{}",
        limited.stdout
    );
}

#[test]
fn graph_is_graphviz_with_every_edge() {
    let p = project();
    let out = p.run(&["graph", "site.rhai", "-i", "inventory.toml"]);
    out.assert_code(0);
    assert!(
        out.stdout.starts_with("digraph playbook {"),
        "{}",
        out.stdout
    );
    // Per-host order on a (0 -> 1) and the result reference (1 -> 3).
    assert!(out.stdout.contains("t0 -> t1;"), "{}", out.stdout);
    assert!(out.stdout.contains("t1 -> t3;"), "{}", out.stdout);
    assert!(!out.stdout.contains("t0 -> t3;"), "{}", out.stdout);
}

#[test]
fn inventory_shows_each_variable_with_its_source() {
    let p = Project::new(Conn::Local);
    p.file(
        "inventory.toml",
        r#"
[vars]
region = "global"
level = "global"

[hosts.a]
connection = "local"
vars = { level = "host" }

[groups.web]
hosts = ["a"]
vars = { region = "web", tier = "front" }
"#,
    );
    let out = p.run(&[
        "inventory",
        "-i",
        "inventory.toml",
        "--host",
        "a",
        "-e",
        "tier=cli",
    ]);
    out.assert_code(0);
    for needle in [
        "level = \"host\"    # from host a",
        "region = \"web\"    # from group web",
        "tier = \"cli\"    # from extra vars",
        "inventory_hostname = \"a\"",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    let missing = p.run(&["inventory", "-i", "inventory.toml", "--host", "zz"]);
    missing.assert_code(1);
    assert!(
        missing.stderr.contains("no host named 'zz'"),
        "{}",
        missing.stderr
    );
}

#[test]
fn doc_lists_modules_and_shows_one() {
    let p = Project::new(Conn::Local);
    let list = p.run(&["doc"]);
    list.assert_code(0);
    for m in [
        "command",
        "copy",
        "file_template",
        "lineinfile",
        "debug",
        "set_fact",
    ] {
        assert!(
            list.stdout.lines().any(|l| l.starts_with(m)),
            "{m} missing:\n{}",
            list.stdout
        );
    }
    let copy = p.run(&["doc", "copy"]);
    copy.assert_code(0);
    assert!(copy.stdout.contains("# copy"), "{}", copy.stdout);
    assert!(copy.stdout.contains("Arguments: "), "{}", copy.stdout);
    let typo = p.run(&["doc", "cpy"]);
    typo.assert_code(1);
    assert!(
        typo.stderr.contains("did you mean 'copy'?"),
        "{}",
        typo.stderr
    );
}

/// The shipped HA playbooks plan against the example inventory: every module call, argument and
/// template reference in them is valid, and the control-plane joins are ordered one at a time.
#[test]
fn the_shipped_ha_playbooks_plan() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for playbook in [
        "playbooks/ha-stacked.rhai",
        "playbooks/ha-external-etcd.rhai",
    ] {
        let out = crate::support::playbook(
            root,
            &["plan", playbook, "-i", "inventories/ha-example.toml"],
        );
        out.assert_code(0);
        let text = &out.stdout;
        for needle in [
            "phase prepare",
            "phase load-balancer",
            "phase control-plane",
            "kubeadm init  (kubeadm at",
            "join control plane m3",
            "after: [",
            "when: manage_kernel | default(true)",
            "when: a Rhai closure, decided per host when it runs",
        ] {
            assert!(
                text.contains(needle),
                "{playbook}: {needle:?} missing in:\n{text}"
            );
        }
        // m3's fresh token is made only after m2 has joined.
        let m3_token = text
            .split("\n  [")
            .find(|block| block.contains("] token for m3"))
            .unwrap_or_else(|| panic!("{playbook}: no token task for m3:\n{text}"));
        assert!(m3_token.contains("join control plane m2"), "{m3_token}");
    }
    // Without kubeadm: the control plane as systemd units with current flags only.
    let out = crate::support::playbook(
        root,
        &[
            "plan",
            "playbooks/ha-binary.rhai",
            "-i",
            "inventories/ha-example.toml",
        ],
    );
    out.assert_code(0);
    for needle in [
        "phase load-balancer",
        "phase etcd",
        "systemd_unit: kube-apiserver",
        "systemd_unit: kube-controller-manager",
        "systemd_unit: kube-scheduler",
        "apiserver certificate",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    let units = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .map(|u| {
        std::fs::read_to_string(root.join(format!("playbooks/templates/ha/{u}.service.j2")))
            .unwrap()
    })
    .join("\n");
    for removed in [
        "--insecure-port",
        "--insecure-bind-address",
        "--address=",
        "--port=",
        "--experimental",
    ] {
        assert!(
            !units.contains(removed),
            "a removed flag in the units: {removed}"
        );
    }
    assert_eq!(units.matches("--leader-elect=true").count(), 2);
}

/// upgrade.rhai plans in kubeadm's order with the rolling controls the issue asks for, and a
/// version that is not 1.MINOR.PATCH is bad input naming the line, before anything runs.
#[test]
fn the_upgrade_playbook_plans_in_kubeadms_order() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = |version: &str| {
        crate::support::playbook(
            root,
            &[
                "plan",
                "playbooks/upgrade.rhai",
                "-i",
                "inventories/ha-example.toml",
                "-e",
                &format!("kubernetes_version={version}"),
            ],
        )
    };
    let out = plan("1.32.1");
    out.assert_code(0);
    let text = &out.stdout;
    let mut at = 0;
    for needle in [
        "phase upgrade: versions",
        "stops at the first failure (any_errors_fatal)",
        "the cluster may go to v1.32.1",
        "phase upgrade: package sources",
        "phase upgrade: first master",
        "kubeadm at 1.32.1 (apt, held)",
        "kubeadm upgrade apply v1.32.1",
        "kubeadm configuration at v1.32.1",
        "phase upgrade: other masters",
        "in batches of 1; stops after a batch where more than 0% of hosts fail",
        "kubeadm upgrade node",
        "phase upgrade: kubelets of the masters",
        "kubelet kubectl at 1.32.1 (apt, held)",
        "restart the kubelet",
        "phase upgrade: workers",
        "in batches of 20%",
        "] drain",
        "throttle: 1 host(s) at a time",
        "delegated to: m1",
        "] uncordon",
        "] Ready at v1.32.1",
        "] keep it cordoned",
        "block 1: rescue",
    ] {
        let found = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing (in this order) in:\n{text}"));
        at += found;
    }
    let out = plan("1.32");
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("give the version to upgrade to as 1.MINOR.PATCH")
            && out.stderr.contains("playbooks/lib/upgrade.rhai:"),
        "{}",
        out.stderr
    );
}

/// A pod network fetched as published keeps its own network: the kubeadm playbooks refuse flannel's
/// URL with another pod_subnet before anything runs, and the default (the manifest as a template)
/// plans with it.
#[test]
fn a_published_flannel_manifest_with_another_pod_subnet_is_refused() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = "cni_manifest=https://github.com/flannel-io/flannel/releases/download/v0.26.1/kube-flannel.yml";
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "playbooks/ha-stacked.rhai",
            "-i",
            "inventories/ha-example.toml",
            "-e",
            "pod_subnet=10.200.0.0/16",
        ];
        args.extend_from_slice(extra);
        crate::support::playbook(root, &args)
    };
    let out = plan(&["-e", url]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("whose network is 10.244.0.0/16, but pod_subnet is 10.200.0.0/16")
            && out
                .stderr
                .contains("playbooks/lib/control_plane.rhai:66:21"),
        "{}",
        out.stderr
    );
    let out = plan(&[]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("pod network (CNI)  (k8s at"),
        "{}",
        out.stdout
    );
}

/// Every command-line mistake is bad input (exit 1, as for a bad inventory or playbook), says
/// why, and touches no host; help and version are not mistakes.
#[test]
fn command_line_mistakes_exit_1_and_touch_no_host() {
    let p = project();
    for (args, says) in [
        (&["run", "site.rhai"][..], "--inventory <INVENTORY>"),
        (
            &[
                "run",
                "site.rhai",
                "-i",
                "inventory.toml",
                "--output",
                "yaml",
            ],
            "'yaml'",
        ),
        (
            &["run", "site.rhai", "-i", "inventory.toml", "--forks", "-1"],
            "-1",
        ),
        (
            &["run", "site.rhai", "-i", "inventory.toml", "--forks", "0"],
            "0 is not in 1..",
        ),
        (
            &["run", "site.rhai", "-i", "inventory.toml", "-e", "1foo=x"],
            "`1foo` is not a variable name",
        ),
        (
            &[
                "run",
                "site.rhai",
                "-i",
                "inventory.toml",
                "-e",
                "foo.bar=1",
            ],
            "`foo.bar` is not a variable name",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = p.run(args);
        out.assert_code(1);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!p.root("a").join("x").exists(), "{args:?} touched a host");
    }
    let help = p.run(&["run", "--help"]);
    help.assert_code(0);
    assert!(
        help.stdout.contains("Exit codes: 0 all ok; 1 bad input")
            && help.stdout.contains("-C, --check")
            && help.stdout.contains("-D, --diff"),
        "{}",
        help.stdout
    );
    p.run(&["--version"]).assert_code(0);
}

/// An empty address in the inventory is refused where it is written.
#[test]
fn an_empty_address_is_refused_with_its_line() {
    let p = project();
    std::fs::write(
        p.path().join("bad.toml"),
        "[hosts.a]\nconnection = \"local\"\naddress = \"\"\n",
    )
    .unwrap();
    let out = p.run(&["run", "site.rhai", "-i", "bad.toml"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("bad.toml:3:11") && out.stderr.contains("host `a`: address \"\""),
        "{}",
        out.stderr
    );
}

/// Ansible's listing flags plan and print, and run nothing: -C/-D are the short check and diff,
/// and the inventory may come from $PLAYBOOK_INVENTORY.
#[test]
fn listing_flags_and_the_default_inventory_run_nothing() {
    let p = project();
    let out = p.run(&[
        "run",
        "-C",
        "-D",
        "site.rhai",
        "-i",
        "inventory.toml",
        "--list-hosts",
        "--list-tasks",
    ]);
    out.assert_code(0);
    for needle in [
        "phase prepare",
        "hosts (2):\n      a\n      b\n",
        "write x\tTAGS: [files]",
        "phase use",
        "hosts (1):\n      c\n",
        "write hi\tTAGS: []",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} in:\n{}",
            out.stdout
        );
    }
    let tags = p.run(&["run", "site.rhai", "-i", "inventory.toml", "--list-tags"]);
    tags.assert_code(0);
    assert!(
        tags.stdout
            .contains("phase prepare\n    TASK TAGS: [files]\n\n  phase use\n    TASK TAGS: []\n"),
        "{}",
        tags.stdout
    );
    let syntax = p.run(&["run", "site.rhai", "-i", "inventory.toml", "--syntax-check"]);
    syntax.assert_code(0);
    assert_eq!(syntax.stdout, "playbook: site.rhai\n");
    p.file(
        "broken.rhai",
        "phase(\"x\", || { on(\"web\", nosuch(#{})); });\n",
    );
    let bad = p.run(&[
        "run",
        "broken.rhai",
        "-i",
        "inventory.toml",
        "--syntax-check",
    ]);
    bad.assert_code(1);
    assert!(!p.root("a").join("x").exists(), "a listing touched a host");

    let env_run = std::process::Command::new(env!("CARGO_BIN_EXE_playbook"))
        .args(["run", "site.rhai", "-C"])
        .current_dir(p.path())
        .env("PLAYBOOK_INVENTORY", "inventory.toml")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        env_run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&env_run.stderr)
    );
    assert!(!p.root("a").join("x").exists(), "check mode wrote");
}

#[test]
fn completions_are_printed_for_each_shell() {
    let p = project();
    for shell in ["bash", "zsh", "fish"] {
        let out = p.run(&["completions", shell]);
        out.assert_code(0);
        assert!(
            out.stdout.contains("playbook") && out.stdout.contains("list-hosts"),
            "{shell}: {}",
            out.stdout
        );
    }
}

/// `playbook doc` gives every module's first sentence whole and points to the language's
/// reference; the README lists every module.
#[test]
fn every_module_is_documented_and_listed_in_the_readme() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = crate::support::playbook(root, &["doc"]);
    list.assert_code(0);
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut modules = 0;
    for line in list.stdout.lines().take_while(|l| !l.is_empty()) {
        let (name, summary) = line.split_once(' ').unwrap();
        assert!(
            summary.trim_end().ends_with('.'),
            "cut mid-sentence: {line}"
        );
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "the README's module table lacks {name}"
        );
        modules += 1;
    }
    assert!(modules >= 20, "{}", list.stdout);
    let rhai = crate::support::playbook(root, &["doc", "rhai"]);
    rhai.assert_code(0);
    for needle in [
        "phase(name",
        ".throttle(n)",
        ".retry_until(",
        ".delegate_to(\"host\")",
        "task(\"name\", |h|",
        "h.read_file(path)",
    ] {
        assert!(rhai.stdout.contains(needle), "{needle} in doc rhai");
    }
}

/// --start-at-task skips what is declared before the named task, and names a mistyped one.
#[test]
fn start_at_task_runs_from_the_named_task_on() {
    let p = project();
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    let out = p.play("site.rhai", &["--start-at-task", "say hi"]);
    out.assert_code(0);
    assert!(!p.root("a").join("x").exists(), "'write x' came before");
    assert_eq!(
        std::fs::read_to_string(p.root("c").join("hi")).unwrap(),
        "hi"
    );
    assert_eq!(
        out.tasks_where(|e| e["status"] == "changed"),
        [
            ("a".to_string(), "react".to_string()),
            ("a".to_string(), "say hi".to_string()),
            ("c".to_string(), "write hi".to_string())
        ]
    );
    let bad = p.run(&[
        "run",
        "site.rhai",
        "-i",
        "inventory.toml",
        "--start-at-task",
        "sya hi",
    ]);
    bad.assert_code(1);
    assert!(
        bad.stderr.contains("no task is named 'sya hi'")
            && bad.stderr.contains("did you mean 'say hi'?"),
        "{}",
        bad.stderr
    );
}

/// docs/EVENTS.md documents every field of every JSON event a run prints (changes, a failure, a
/// skip, `print`, `--diff`, and a bad input's `error`), and every event has its timestamp.
#[test]
fn every_json_event_field_is_documented() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/EVENTS.md")).unwrap();
    let section = |event: &str| -> String {
        let start = doc
            .find(&format!("## `{event}`"))
            .unwrap_or_else(|| panic!("docs/EVENTS.md has no section for `{event}`"));
        let rest = &doc[start + 3..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    let p = project();
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    p.file(
        "events.rhai",
        r#"
print("planning");
on("web", copy(#{ dest: "{{ root }}/x", content: "x\n" }).name("write x"));
on("a", shell(#{ cmd: "exit 3" }).name("fails").ignore_errors(true));
on("b", shell(#{ cmd: "true" }).name("skipped").when("false"));
on("c", shell(#{ cmd: "false" }).name("fails for real"));
on("b", shell(#{ cmd: "false" }).name("retried").retries(1).delay(0).ignore_errors(true));
"#,
    );
    let run = p.play("events.rhai", &["--diff"]);
    run.assert_code(2);
    p.file("broken.rhai", "let x = ;\n");
    let bad = p.play("broken.rhai", &[]);
    bad.assert_code(1);
    p.file(
        "rolling.rhai",
        r#"
phase("roll", || {
    serial(1);
    on("all", shell(#{ cmd: "false" }).name("fails").when("inventory_hostname == 'b'"));
});
"#,
    );
    let rolling = p.play("rolling.rhai", &[]);
    rolling.assert_code(2);
    let mut seen = std::collections::BTreeSet::new();
    for e in run
        .events()
        .into_iter()
        .chain(bad.events())
        .chain(rolling.events())
    {
        let obj = e.as_object().unwrap();
        let kind = obj["event"].as_str().unwrap().to_string();
        let ts = obj["ts"].as_str().unwrap_or_else(|| panic!("no ts: {e}"));
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        let text = section(&kind);
        for (field, value) in obj {
            if field == "event" || field == "ts" {
                continue;
            }
            assert!(
                text.contains(&format!("`{field}`")),
                "docs/EVENTS.md does not document `{field}` of `{kind}`"
            );
            if let Some(inner) = value
                .as_object()
                .filter(|_| field == "diff" || field == "error")
            {
                for k in inner.keys() {
                    assert!(text.contains(&format!("`{k}`")), "diff field `{k}`");
                }
            }
            seen.insert(format!("{kind}.{field}"));
        }
    }
    for must in [
        "run_start.schema",
        "task_end.diff",
        "task_end.msg",
        "task_end.summary",
        "task_end.error",
        "print.text",
        "task_retry.attempt",
        "recap.hosts",
        "recap.not_reached",
        "recap.stopped",
        "batch_start.hosts",
        "rollout_stop.not_reached",
        "error.schema",
        "error.line",
    ] {
        assert!(seen.contains(must), "the run printed no {must}: {seen:?}");
    }
    let phase = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "phase_start")
        .unwrap();
    assert_eq!(
        phase["runs"], 6,
        "write x on a and b, one task each on a, b, c, b"
    );
    let diff = run
        .task_ends()
        .into_iter()
        .find(|e| e["task"] == "write x")
        .unwrap();
    assert!(
        diff["diff"]["unified"].as_str().unwrap().contains("+x"),
        "{diff}"
    );
}

/// A failure while running is told with its kind, its host and task, where the task is written,
/// and for a template the template's line: in the JSON `error` of `task_end`, and in the text.
#[test]
fn runtime_failures_carry_their_kind_host_task_and_position() {
    let p = project();
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    p.file("templates/t.j2", "first line\n{{ r.nope }}\n");
    p.file(
        "fails.rhai",
        r#"
on("a", shell(#{ cmd: "echo hi" }).name("say").register("r"));
on("a", file_template(#{ src: "templates/t.j2", dest: "{{ root }}/t" }).name("render"));
on("b", shell(#{ cmd: "echo hi" }).name("say b").register("rb"));
on("b", copy(#{ dest: "{{ root }}/x",
               content: "{{ rb.stdout }}\n{{ rb.nope }}" }).name("inline"));
on("c", shell(#{ cmd: "exit 3" }).name("exits"));
"#,
    );
    let run = p.play("fails.rhai", &[]);
    run.assert_code(2);
    let ends = run.task_ends();
    let end = |task: &str| ends.iter().find(|e| e["task"] == task).unwrap().clone();

    let render = end("render");
    assert_eq!(render["status"], "failed", "{render}");
    let err = &render["error"];
    assert_eq!(err["kind"], "template", "{render}");
    assert_eq!(err["host"], "a");
    assert_eq!(err["task"], "render");
    assert!(
        err["file"].as_str().unwrap().ends_with("fails.rhai"),
        "{err}"
    );
    assert_eq!(
        (err["line"].clone(), err["column"].clone()),
        (3.into(), 9.into()),
        "{err}"
    );
    assert!(
        err["template"]
            .as_str()
            .unwrap()
            .ends_with("templates/t.j2"),
        "{err}"
    );
    assert_eq!(err["template_line"], 2, "{err}");

    // A templated argument: the line inside the argument's text.
    let inline = end("inline");
    let err = &inline["error"];
    assert_eq!(err["kind"], "template", "{inline}");
    assert_eq!(err["host"], "b");
    assert_eq!(err["line"], 5, "{err}");
    assert!(
        err["template"].as_str().unwrap().contains("task 'inline'"),
        "{err}"
    );
    assert_eq!(err["template_line"], 2, "{err}");

    let exits = end("exits");
    let err = &exits["error"];
    assert_eq!(err["kind"], "failed", "{exits}");
    assert_eq!(
        (err["host"].clone(), err["task"].clone()),
        ("c".into(), "exits".into())
    );
    assert_eq!(err["line"], 7, "{err}");
    assert!(err.get("template").is_none(), "{err}");
    assert!(exits["msg"].as_str().unwrap().contains('3'), "{exits}");

    // What went well carries no error.
    assert!(end("say").get("error").is_none());

    // The text names the template and its line, as it did.
    let text = p.run(&["run", "fails.rhai", "-i", "inventory.toml"]);
    text.assert_code(2);
    let all = format!("{}{}", text.stdout, text.stderr);
    assert!(all.contains("templates/t.j2:2"), "{all}");
}

/// A secret task's failure says no more in its `error` than in its hidden `msg`.
#[test]
fn a_secret_tasks_failure_shows_its_kind_but_no_value() {
    let p = project();
    p.mkroot("a");
    p.file(
        "secret.rhai",
        r#"
on("a", shell(#{ cmd: "echo s3cr3t-canary-value; exit 1" }).name("leaky").secret());
"#,
    );
    let run = p.play("secret.rhai", &[]);
    run.assert_code(2);
    assert!(
        !run.stdout.contains("s3cr3t-canary-value"),
        "{}",
        run.stdout
    );
    let end = run
        .task_ends()
        .into_iter()
        .find(|e| e["task"] == "leaky")
        .unwrap();
    assert_eq!(end["error"]["kind"], "failed", "{end}");
    assert_eq!(end["error"]["line"], 2, "{end}");
}

/// Tasks and errors from an imported library name its file as it is on disk, not its import path.
#[test]
fn plan_and_errors_name_library_files() {
    let p = project();
    p.file(
        "lib/tasks.rhai",
        "fn place(target) {\n    on(target, shell(#{ cmd: \"true\" }).name(\"from lib\"));\n}\n",
    );
    p.file(
        "uses.rhai",
        "import \"lib/tasks\" as t;\nt::place(\"web\");\n",
    );
    let out = p.run(&["plan", "uses.rhai", "-i", "inventory.toml"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("from lib  (shell at lib/tasks.rhai:2)"),
        "{}",
        out.stdout
    );
    p.file(
        "bad.rhai",
        "import \"lib/tasks\" as t;\nt::place(\"nosuchgroup\");\n",
    );
    let bad = p.run(&["plan", "bad.rhai", "-i", "inventory.toml"]);
    bad.assert_code(1);
    assert!(
        bad.stderr.contains("lib/tasks.rhai:2:5") && bad.stderr.contains("nosuchgroup"),
        "{}",
        bad.stderr
    );
}

#[test]
fn plan_shows_how_each_task_is_run() {
    let p = Project::new(crate::support::Conn::Local);
    p.hosts(&["a", "b"], &[]);
    p.file(
        "control.rhai",
        r#"on("all", shell(#{ cmd: "true" }).retries(2).delay(1).retry_until("result.rc == 0")
    .run_once().timeout(9).environment(#{ TOKEN: "s3cret" }).become(true).become_user("app")
    .delegate_to("b"));
"#,
    );
    let out = p.run(&["plan", "control.rhai", "-i", "inventory.toml"]);
    out.assert_code(0);
    for needle in [
        "retries: at most 3 attempt(s) until result.rc == 0, 1 s apart",
        "run once, on the first host",
        "timeout: 9 s",
        "environment: TOKEN\n",
        "become user: app\n",
        "delegated to: b",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("s3cret"),
        "an environment value is shown"
    );
}

#[test]
fn keep_output_takes_sizes_with_binary_suffixes_and_refuses_others() {
    let p = Project::new(Conn::Local);
    p.hosts(&["a"], &[]);
    p.file(
        "out.rhai",
        r#"on("a", shell(#{ cmd: "head -c 5000 /dev/zero" }).register("o"));
on("a", assert(#{ that: ["o.stdout_cut == 5000 - 2048"] }));"#,
    );
    for size in ["2K", "2k", "2KiB", "2048"] {
        p.play("out.rhai", &["--keep-output", size]).assert_code(0);
    }
    let bad = p.play("out.rhai", &["--keep-output", "2X"]);
    bad.assert_code(1);
    assert!(bad.stderr.contains("a size is bytes"), "{}", bad.stderr);
}

#[test]
fn history_shows_what_real_runs_changed_per_host_and_task() {
    let p = project();
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    p.file(
        "journal.rhai",
        r#"
on("web", copy(#{ dest: "{{ root }}/conf", content: "{{ v }}\n" }).name("write conf"));
on("c", shell(#{ cmd: "true", changed_when: false }).name("look"));
"#,
    );
    let history = |args: &[&str]| {
        let mut full = vec!["history", "-i", "inventory.toml"];
        full.extend_from_slice(args);
        let out = p.run(&full);
        out.assert_code(0);
        out.stdout
    };
    p.play("journal.rhai", &["-e", "v=1", "--check"])
        .assert_code(0);
    assert!(
        history(&[]).starts_with("no change recorded"),
        "check mode records nothing"
    );
    p.play("journal.rhai", &["-e", "v=1"]).assert_code(0);
    p.play("journal.rhai", &["-e", "v=1"]).assert_code(0);
    p.play("journal.rhai", &["-e", "v=2"]).assert_code(0);
    let all = history(&["--json"]);
    let entries: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Two changing runs on a and b; the unchanged run and host c add nothing.
    let got: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["task"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "{all}");
    assert!(got.iter().all(|(h, t)| h != "c" && t == "write conf"));
    assert_ne!(entries[0]["run"], entries[3]["run"]);
    let only_a = history(&["--host", "a"]);
    assert_eq!(only_a.lines().count(), 2, "{only_a}");
    assert!(
        only_a
            .lines()
            .all(|l| l.contains("  a  main / write conf — ")),
        "{only_a}"
    );
    let since = entries[3]["run"].as_str().unwrap();
    assert_eq!(history(&["--since", since, "--json"]).lines().count(), 2);
    assert_eq!(
        history(&["--since", "2999-01-01", "--json"])
            .lines()
            .count(),
        0
    );
}
