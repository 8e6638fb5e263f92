//! `command`: runs a program without a shell.

use engine::host::quote;
use serde::Deserialize;
use serde_json::Value;

use crate::shared::exec::{check_env, EnvVars, Guards, Invocation, Run, RunArgs};

#[allow(non_upper_case_globals)] // used as a unit struct is, like the other modules
pub const Command: Run<Args> = Run::new();

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The command line. It is split into words with shell rules (quotes group words) but no
    /// shell runs it: `|`, `>`, `&&`, `$VAR` and `*` are passed to the program literally. Use
    /// `shell` for those. Give either `cmd` or `argv`.
    pub cmd: Option<String>,
    /// The program and its arguments as a list, each passed exactly as given.
    pub argv: Option<Vec<String>>,
    /// Directory to run in (and against which relative `creates`/`removes` are resolved).
    pub chdir: Option<String>,
    /// Skip the command when this path exists (`*` and `?` act as wildcards).
    pub creates: Option<String>,
    /// Skip the command when this path does not exist (`*` and `?` act as wildcards).
    pub removes: Option<String>,
    /// Text fed to the command's standard input.
    pub stdin: Option<String>,
    /// Add a newline after `stdin` (default true, as Ansible).
    pub stdin_add_newline: Option<bool>,
    /// Whether a successful run counts as a change (default true). `false` makes the task report
    /// "ok" after running; useful for commands that only read.
    pub changed_when: Option<bool>,
    /// Environment variables for the command.
    pub env: Option<EnvVars>,
}

pub const DOC: &str = r#"# command

Runs a program on the target **without a shell**. The `cmd` line is split into words with shell
quoting rules, and each word is passed to the program as one argument: pipes, redirections,
`&&`, variables and globs are *not* interpreted (`echo a | b` prints `a | b`). Use `shell` when
you need them.

The command runs every time unless a guard says otherwise: `creates` skips it when a path exists,
`removes` skips it when a path does not. Guards are checked in check mode too (they only read);
the command itself never runs in check mode, which reports that it would run.

A non-zero exit status fails the task with the rc and the last lines of stderr and stdout.

## Arguments

| name | type | |
|---|---|---|
| `cmd` | string | command line, split with shell quoting rules (or use `argv`) |
| `argv` | list of strings | program and arguments, passed as they are |
| `chdir` | string | directory to run in |
| `creates` | string | skip when this path (glob) exists |
| `removes` | string | skip when this path (glob) is missing |
| `stdin` | string | text for standard input |
| `stdin_add_newline` | bool | append a newline to `stdin` (default true) |
| `changed_when` | bool | report a change after a run (default true) |
| `env` | map | environment variables |

## Result

`rc`, `stdout`, `stderr` (trailing newlines removed), `stdout_lines`, `stderr_lines`, and `cmd`
(the argument list).

## Example

```rhai
command(#{ cmd: "kubeadm init --config /etc/kubeadm.yaml", creates: "/etc/kubernetes/admin.conf" })
command(#{ argv: ["useradd", "-m", "deploy user"], changed_when: true })
```
"#;

impl Args {
    /// The words of the command.
    fn words(&self) -> Result<Vec<String>, String> {
        let words = match (&self.cmd, &self.argv) {
            (Some(cmd), None) => shlex::split(cmd)
                .ok_or_else(|| format!("cmd: cannot split {cmd:?} (unbalanced quotes?)"))?,
            (None, Some(argv)) => argv.clone(),
            (Some(_), Some(_)) => return Err("give either cmd or argv, not both".into()),
            (None, None) => return Err("missing field `cmd` (or `argv`)".into()),
        };
        if words.is_empty() {
            return Err(if self.cmd.is_some() {
                "cmd: is empty"
            } else {
                "argv: is empty"
            }
            .into());
        }
        Ok(words)
    }
}

impl RunArgs for Args {
    const NAME: &'static str = "command";
    const DOC: &'static str = DOC;

    fn invocation(&self) -> Result<Invocation<'_>, String> {
        let words = self.words()?;
        let script = words
            .iter()
            .map(|w| quote(w))
            .collect::<Result<Vec<_>, _>>()?
            .join(" ");
        Ok(Invocation {
            script,
            display: self.cmd.clone().unwrap_or_else(|| {
                shlex::try_join(words.iter().map(|s| s.as_str())).unwrap_or_default()
            }),
            cmd_value: Value::from(words),
            chdir: self.chdir.as_deref(),
            env: &self.env,
            stdin: self.stdin.as_deref(),
            stdin_add_newline: self.stdin_add_newline.unwrap_or(true),
        })
    }

    fn guards(&self) -> Guards<'_> {
        Guards {
            creates: self.creates.as_deref(),
            removes: self.removes.as_deref(),
            unless: None,
        }
    }

    fn changed_when(&self) -> Option<bool> {
        self.changed_when
    }

    fn check(&self) -> Result<(), String> {
        check_env(&self.env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{snapshot, Env};
    use engine::module::Status;
    use serde_json::json;

    #[tokio::test]
    async fn runs_without_a_shell() {
        let env = Env::new();
        let out = env
            .apply(&Command, json!({ "cmd": "echo 'a  b' | wc -l $HOME" }))
            .await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            out.summary.as_deref(),
            Some("run: echo 'a  b' | wc -l $HOME")
        );
        assert_eq!(out.result["stdout"], "a  b | wc -l $HOME");
        assert_eq!(out.result["rc"], 0);
        assert_eq!(
            out.result["cmd"],
            json!(["echo", "a  b", "|", "wc", "-l", "$HOME"])
        );
    }

    #[tokio::test]
    async fn argv_items_are_passed_as_they_are() {
        let env = Env::new();
        let target = env.path("it's $(here)");
        let out = env
            .apply(
                &Command,
                json!({ "argv": ["touch", target], "changed_when": false }),
            )
            .await;
        assert_eq!(out.status, Status::Ok, "changed_when false");
        assert!(std::path::Path::new(&target).exists());
    }

    #[tokio::test]
    async fn creates_and_removes_guards() {
        let env = Env::new();
        let marker = env.path("done.flag");
        let args = json!({ "cmd": format!("touch {marker}"), "creates": env.path("*.flag") });
        // Check mode: the guard is evaluated, the command does not run.
        assert_eq!(env.check(&Command, args.clone()).await, Status::Changed);
        assert!(!std::path::Path::new(&marker).exists());
        env.apply(&Command, args.clone()).await;
        assert!(std::path::Path::new(&marker).exists());
        let again = env.apply(&Command, args).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(
            again.result["msg"],
            format!("{} exists", env.path("*.flag"))
        );

        let rm =
            json!({ "argv": ["rm", "done.flag"], "chdir": env.path(""), "removes": "done.flag" });
        assert_eq!(
            env.apply(&Command, rm.clone()).await.status,
            Status::Changed
        );
        assert!(!std::path::Path::new(&marker).exists());
        let again = env.apply(&Command, rm).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(again.result["msg"], "done.flag does not exist");
    }

    #[tokio::test]
    async fn stdin_env_and_chdir() {
        let env = Env::new();
        let out = env
            .apply(
                &Command,
                json!({ "argv": ["sh", "-c", "cat; echo \"$GREETING\"; pwd"], "stdin": "in",
                        "env": { "GREETING": "hi there", "N": 3 }, "chdir": env.path("") }),
            )
            .await;
        let dir = std::fs::canonicalize(env.dir.path()).unwrap();
        assert_eq!(
            out.result["stdout"],
            format!("in\nhi there\n{}", dir.display())
        );
        assert_eq!(out.result["stdout_lines"][1], "hi there");
    }

    #[tokio::test]
    async fn failure_reports_rc_and_stderr() {
        let env = Env::new();
        let err = env
            .error(
                &Command,
                json!({ "argv": ["sh", "-c", "echo out; echo bad >&2; exit 3"] }),
            )
            .await;
        assert!(err.contains("rc 3"), "{err}");
        assert!(err.contains("stderr:\nbad"), "{err}");
        assert!(err.contains("stdout:\nout"), "{err}");
        let err = env
            .error(
                &Command,
                json!({ "cmd": "true", "chdir": env.path("missing") }),
            )
            .await;
        assert!(err.contains("cannot change directory"), "{err}");
    }

    #[tokio::test]
    async fn check_mode_runs_nothing() {
        let env = Env::new();
        let before = snapshot(env.dir.path());
        let status = env
            .check(&Command, json!({ "argv": ["touch", env.path("x")] }))
            .await;
        assert_eq!(status, Status::Changed);
        assert_eq!(snapshot(env.dir.path()), before);
    }

    #[tokio::test]
    async fn argument_errors_name_the_field() {
        let env = Env::new();
        let err = env
            .error(&Command, json!({ "cmd": "true", "chdri": "/" }))
            .await;
        assert!(
            err.contains("unknown field `chdri`") && err.contains("chdir"),
            "{err}"
        );
        let err = env.error(&Command, json!({ "cmd": "echo 'x" })).await;
        assert!(err.contains("unbalanced"), "{err}");
        let err = env
            .error(&Command, json!({ "cmd": "x", "argv": ["y"] }))
            .await;
        assert!(err.contains("not both"), "{err}");
        let err = env.error(&Command, json!({ "creates": "/x" })).await;
        assert!(err.contains("cmd"), "{err}");
        let err = env
            .error(&Command, json!({ "cmd": "x", "changed_when": "yes" }))
            .await;
        assert!(err.contains("changed_when"), "{err}");
    }
}
