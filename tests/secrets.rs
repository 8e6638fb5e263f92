//! The leak catalogue: canary secrets from the vault, an inventory `secret` list, `-e` and
//! `secret()` in Rhai, tried on every output path; no byte of stdout or stderr may show one, in
//! any of its common encodings.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{Conn, Project};

const VAULT: &str = "VaultCanary-8c1f";
const INV: &str = "InvCanary-77ab";
const EXTRA: &str = "ExtraCanary-5d2e";
const RHAI: &str = "RhaiCanary-91fe";
/// What a target's file held before a password rotated: known to no one but the file.
const OLD: &str = "OldCanary-3e9d";
const ALL: &str = "{{ vault_pw }} {{ inv_pw }} {{ ext_pw }} {{ rhai_pw }}";

/// Runs the binary with `stdin` and extra environment.
fn playbook_with(p: &Project, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_playbook"))
        .args(args)
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The forms a canary must not appear in.
fn forms(canary: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(canary);
    vec![
        canary.to_string(),
        canary.to_lowercase(),
        canary.to_uppercase(),
        canary.replace('-', "%2D"),
        b64.trim_end_matches('=').to_string(),
    ]
}

fn assert_no_canary(case: &str, text: &str) {
    assert_none_of(case, text, &[VAULT, INV, EXTRA, RHAI, OLD]);
}

fn assert_none_of(case: &str, text: &str, canaries: &[&str]) {
    for &canary in canaries {
        for f in forms(canary) {
            assert!(!text.contains(&f), "{case}: {f} shown in:\n{text}");
        }
    }
}

fn project() -> Project {
    let p = Project::new(Conn::Local);
    p.file("pass", "correct horse battery\n");
    p.mkroot("a");
    let (code, line) = playbook_with(
        &p,
        &[
            "vault",
            "encrypt-string",
            "--name",
            "vault_pw",
            "--vault-password-file",
            "pass",
        ],
        VAULT,
        &[],
    );
    assert_eq!(code, 0, "{line}");
    assert_no_canary("encrypt-string", &line);
    p.file(
        "inventory.toml",
        &format!(
            "[defaults]\nconnection = \"local\"\nsecret = [\"inv_pw\", \"ext_pw\"]\n\n[vars]\n{line}\
             inv_pw = \"{INV}\"\nrhai_pw = \"{RHAI}\"\nroot = \"{}\"\n\n[hosts.a]\n",
            p.remote_root("a")
        ),
    );
    p.file("templates/conf.j2", "db={{ vault_pw }}\n");
    p
}

/// One attempt: a playbook (None: the command alone), the command's arguments, the exit code
/// it must end with, and a text its output must show (so the path was really taken).
struct Attempt {
    name: &'static str,
    playbook: Option<String>,
    args: Vec<&'static str>,
    code: i32,
    shows: &'static str,
}

fn attempt(
    name: &'static str,
    body: &str,
    args: &[&'static str],
    code: i32,
    shows: &'static str,
) -> Attempt {
    Attempt {
        name,
        playbook: Some(format!("secret(\"rhai_pw\");\n{body}\n")),
        args: args.to_vec(),
        code,
        shows,
    }
}

fn on_a(task: &str) -> String {
    format!("on(\"a\", {task});")
}

#[test]
fn no_output_path_shows_a_secret() {
    let p = project();
    let debug = |msg: &str| on_a(&format!("debug(#{{ msg: \"{msg}\" }})"));
    let copy = on_a(&format!(
        "copy(#{{ dest: \"{{{{ root }}}}/conf\", content: \"{ALL}\\n\" }})"
    ));
    let template =
        on_a("file_template(#{ src: \"templates/conf.j2\", dest: \"{{ root }}/t.conf\" })");
    let line = on_a(
        "lineinfile(#{ path: \"{{ root }}/l.conf\", regexp: \"^pw=\", line: \"pw={{ inv_pw }}\" })",
    );
    let hidden = "[diff hidden: content depends on a secret]";
    let msg_hidden = "hidden: the task reads secret";
    let mut attempts = vec![
        attempt("debug", &debug(ALL), &[], 0, msg_hidden),
        attempt("debug upper", &debug("{{ vault_pw | upper }} {{ ext_pw | upper }}"), &[], 0, msg_hidden),
        attempt("debug lower", &debug("{{ inv_pw | lower }} {{ rhai_pw | lower }}"), &[], 0, msg_hidden),
        attempt("debug base64", &debug("{{ vault_pw | b64encode }} {{ inv_pw | b64encode }}"), &[], 0, msg_hidden),
        attempt("debug urlencode", &debug("{{ ext_pw | urlencode }} {{ rhai_pw | urlencode }}"), &[], 0, msg_hidden),
        attempt("debug replace", &debug("{{ vault_pw | replace('-', '_') }}"), &[], 0, msg_hidden),
        attempt("debug json", &debug(ALL), &["--output", "json"], 0, msg_hidden),
        attempt("debug -v", &debug(ALL), &["-v"], 0, msg_hidden),
        attempt("print at plan time", "print(vars()[\"vault_pw\"] + vars()[\"inv_pw\"] + vars()[\"ext_pw\"] + vars()[\"rhai_pw\"]);", &[], 0, "[secret]"),
        attempt("print json", "print(vars()[\"inv_pw\"].to_upper());", &["--output", "json"], 0, "[secret]"),
        attempt("print in a custom task", &on_a("task(\"t\", |h| { print(h.vars[\"vault_pw\"]); \"ok\" })"), &[], 0, "[secret]"),
        attempt("custom task message", &on_a("task(\"t\", |h| #{ changed: true, msg: h.vars[\"inv_pw\"] })"), &[], 0, "changed"),
        attempt("fail", &on_a(&format!("fail(#{{ msg: \"{ALL}\" }})")), &[], 2, msg_hidden),
        attempt("fail json", &on_a("fail(#{ msg: \"{{ vault_pw | b64encode }}\" })"), &["--output", "json"], 2, msg_hidden),
        attempt("assert", &on_a("assert(#{ that: \"inv_pw == 'x'\", fail_msg: \"{{ inv_pw }}\" })"), &[], 2, msg_hidden),
        attempt("shell stderr", &on_a(&format!("shell(#{{ cmd: \"echo {ALL} >&2; exit 3\" }})")), &[], 2, msg_hidden),
        attempt("shell stderr upper", &on_a("shell(#{ cmd: \"echo {{ vault_pw | upper }} >&2; exit 3\" })"), &["-v"], 2, msg_hidden),
        attempt("command argv", &on_a("command(#{ argv: [\"false\", \"{{ vault_pw }}\"] })"), &[], 2, msg_hidden),
        attempt("shell changed summary", &on_a("shell(#{ cmd: \"echo {{ inv_pw }}\" })"), &["-v"], 0, "summary hidden"),
        attempt("register and debug", &format!("{}\n{}", on_a("shell(#{ cmd: \"echo {{ vault_pw }}\" }).register(\"out\")"), debug("{{ out.stdout | upper }}")), &[], 0, msg_hidden),
        attempt("no_log task", &on_a("shell(#{ cmd: \"cat {{ root }}/conf >&2; exit 1\" }).secret().name(\"no_log\")"), &["-v"], 2, "marked secret"),
        attempt("set_fact copy", &format!("{}\n{}", on_a("set_fact(#{ copy_pw: \"{{ rhai_pw }}\" })"), debug("{{ copy_pw | replace('R', 'r') }}")), &[], 0, msg_hidden),
        attempt("retries", &on_a("shell(#{ cmd: \"echo {{ inv_pw }} >&2; false\" }).retries(1).delay(0)"), &["-v"], 2, msg_hidden),
        attempt("environment", &on_a("shell(#{ cmd: \"env >&2; exit 1\" }).environment(#{ PW: \"{{ ext_pw }}\" })"), &[], 2, msg_hidden),
        attempt("condition", &on_a("debug(#{ msg: \"x\" }).when(\"inv_pw == 'nope'\")"), &["-v"], 0, "condition is false"),
        attempt("copy diff", &copy, &["--diff"], 0, hidden),
        attempt("copy check diff", &copy, &["--check", "--diff"], 0, hidden),
        attempt("copy diff json", &copy, &["--diff", "--output", "json"], 0, hidden),
        attempt("template diff", &template, &["--diff"], 0, hidden),
        attempt("template check diff", &template, &["--check", "--diff", "-v"], 0, hidden),
        attempt("lineinfile diff", &line, &["--diff"], 0, hidden),
        attempt("throw at plan time", "throw \"bad \" + vars()[\"vault_pw\"];", &[], 1, "bad [secret]"),
        attempt("throw json", "throw vars()[\"inv_pw\"].to_lower();", &["--output", "json"], 1, "bad_input"),
        attempt("host pattern", "on(vars()[\"ext_pw\"], debug(#{ msg: \"x\" }));", &[], 1, "[secret]"),
        attempt("phase name", &format!("phase(\"p-\" + vars()[\"rhai_pw\"], || {{ {} }});", debug("x")), &["--output", "json"], 0, "p-[secret]"),
        attempt("task name", &on_a("debug(#{ msg: \"x\" }).name(\"t \" + vars()[\"vault_pw\"])"), &["-v"], 0, "t [secret]"),
        attempt("list tasks", &on_a("debug(#{ msg: \"x\" }).name(\"t \" + vars()[\"vault_pw\"])"), &["--list-tasks"], 0, "t [secret]"),
        attempt("template error", &debug("{{ vault_pw.nothere }}"), &[], 2, msg_hidden),
    ];
    let named = on_a("debug(#{ msg: \"x\" }).name(\"t \" + vars()[\"inv_pw\"])");
    for (name, cmd) in [("plan", "plan"), ("graph", "graph")] {
        attempts.push(Attempt {
            name,
            playbook: Some(format!("{named}\n")),
            args: vec![cmd],
            code: 0,
            shows: "[secret]",
        });
    }
    for (name, args, shows) in [
        (
            "inventory",
            vec!["inventory", "-i", "inventory.toml"],
            "[secret]",
        ),
        (
            "inventory --host",
            vec!["inventory", "-i", "inventory.toml", "--host", "a"],
            "vault_pw = [secret]",
        ),
        (
            "inventory --to-toml",
            vec!["inventory", "-i", "inventory.toml", "--to-toml"],
            "[hosts.a]",
        ),
    ] {
        attempts.push(Attempt {
            name,
            playbook: None,
            args,
            code: 0,
            shows,
        });
    }

    for a in &attempts {
        p.write("a", "conf", &format!("old={OLD}\n"));
        p.write("a", "t.conf", &format!("db={OLD}\n"));
        p.write("a", "l.conf", &format!("pw={OLD}\n"));
        let args: Vec<String> = match &a.playbook {
            Some(body) => {
                p.file("site.rhai", body);
                let cmd = if a
                    .args
                    .first()
                    .is_some_and(|c| *c == "plan" || *c == "graph")
                {
                    a.args[0]
                } else {
                    "run"
                };
                let mut v: Vec<String> = [cmd, "site.rhai", "-i", "inventory.toml", "-e"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                v.push(format!("ext_pw={EXTRA}"));
                v.extend(a.args.iter().filter(|x| **x != cmd).map(|s| s.to_string()));
                v
            }
            None => a.args.iter().map(|s| s.to_string()).collect(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = playbook_with(&p, &args, "", &[("PLAYBOOK_VAULT_PASSWORD_FILE", "pass")]);
        assert_eq!(code, a.code, "{}: exit code\n{out}", a.name);
        assert!(
            out.contains(a.shows),
            "{}: {:?} not shown in:\n{out}",
            a.name,
            a.shows
        );
        match a.playbook {
            Some(_) => assert_no_canary(a.name, &out),
            // Without the playbook, what its `secret()` marks is not known.
            None => assert_none_of(a.name, &out, &[VAULT, INV, EXTRA, OLD]),
        }
    }
    assert!(attempts.len() >= 40, "{} attempts", attempts.len());
}

#[test]
fn bad_files_and_wrong_keys_show_no_secret() {
    let p = project();
    p.file(
        "site.rhai",
        "on(\"a\", debug(#{ msg: \"{{ vault_pw }}\" }));\n",
    );
    p.file("wrong", "not the password\n");
    let inv = std::fs::read_to_string(p.path().join("inventory.toml")).unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "wrong key",
            vec![
                "run",
                "site.rhai",
                "-i",
                "inventory.toml",
                "--vault-password-file",
                "wrong",
            ],
            "wrong vault password",
        ),
        (
            "wrong key on inventory",
            vec![
                "inventory",
                "-i",
                "inventory.toml",
                "--vault-password-file",
                "wrong",
            ],
            "variable `vault_pw`",
        ),
        (
            "no key",
            vec!["plan", "site.rhai", "-i", "inventory.toml"],
            "no vault key was given",
        ),
        (
            "unterminated secret",
            vec![
                "run",
                "site.rhai",
                "-i",
                "bad1.toml",
                "--vault-password-file",
                "pass",
            ],
            "bad1.toml:",
        ),
        (
            "error beside a secret",
            vec![
                "inventory",
                "-i",
                "bad2.toml",
                "--vault-password-file",
                "pass",
            ],
            "bad2.toml:",
        ),
    ];
    p.file(
        "bad1.toml",
        &inv.replace(&format!("inv_pw = \"{INV}\""), &format!("inv_pw = \"{INV}")),
    );
    p.file("bad2.toml", &inv.replace("rhai_pw =", "rhai_pw = = "));
    for (name, args, shows) in cases {
        let (code, out) = playbook_with(&p, &args, "", &[]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(shows), "{name}: {shows:?} not in {out}");
        // A file that does not parse cannot say which of its values `secret()` in a playbook
        // will mark: those the inventory or the vault mark are what it masks.
        assert_none_of(name, &out, &[VAULT, INV, EXTRA, OLD]);
    }
    assert!(!p.root("a").join("conf").exists());
}

#[test]
fn the_vault_commands_show_no_secret_and_round_trip() {
    let p = project();
    let key = [("PLAYBOOK_VAULT_PASSWORD_FILE", "pass")];
    p.file("vars.toml", &format!("ext_pw = \"{EXTRA}\"\n"));
    let (code, out) = playbook_with(&p, &["vault", "encrypt", "vars.toml"], "", &key);
    assert_eq!(code, 0, "{out}");
    assert_no_canary("vault encrypt", &out);
    let at_rest = std::fs::read_to_string(p.path().join("vars.toml")).unwrap();
    assert!(
        at_rest.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{at_rest}"
    );
    assert_no_canary("encrypted file", &at_rest);
    // The encrypted file feeds a run: its variable is secret there.
    p.file(
        "site.rhai",
        "on(\"a\", debug(#{ msg: \"{{ ext_pw }}\" }));\n",
    );
    let (code, out) = playbook_with(
        &p,
        &[
            "run",
            "site.rhai",
            "-i",
            "inventory.toml",
            "-e",
            "@vars.toml",
        ],
        "",
        &key,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("hidden: the task reads secret ext_pw"),
        "{out}"
    );
    assert_no_canary("run with -e @encrypted", &out);
    // `view` shows the plain text: that is what it is for.
    let (code, out) = playbook_with(&p, &["vault", "view", "vars.toml"], "", &key);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("ext_pw = \"{EXTRA}\"\n").as_str())
    );
    // `edit` runs $EDITOR on a decrypted copy and encrypts what it leaves.
    p.file("editor.sh", "#!/bin/sh\necho 'more = 1' >> \"$1\"\n");
    let editor = format!("sh {}", p.path().join("editor.sh").display());
    let (code, out) = playbook_with(
        &p,
        &["vault", "edit", "vars.toml"],
        "",
        &[key[0], ("EDITOR", &editor), ("VISUAL", &editor)],
    );
    assert_eq!(code, 0, "{out}");
    assert_no_canary("vault edit", &out);
    let (code, out) = playbook_with(&p, &["vault", "decrypt", "vars.toml"], "", &key);
    assert_eq!(code, 0, "{out}");
    assert_no_canary("vault decrypt", &out);
    assert_eq!(
        std::fs::read_to_string(p.path().join("vars.toml")).unwrap(),
        format!("ext_pw = \"{EXTRA}\"\nmore = 1\n")
    );
    let (code, out) = playbook_with(&p, &["vault", "decrypt", "vars.toml"], "", &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not encrypted with the vault"), "{out}");
}
