//! `shell`: runs a command line with /bin/sh.

use engine::host::quote;
use serde::Deserialize;
use serde_json::Value;

use crate::shared::exec::{check_env, EnvVars, Guards, Invocation, Run, RunArgs};

#[allow(non_upper_case_globals)] // used as a unit struct is, like the other modules
pub const Shell: Run<Args> = Run::new();

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The command line, run with `/bin/sh -c` (or `executable -c`): pipes, redirections and
    /// variables work.
    pub cmd: String,
    /// Directory to run in (and against which relative `creates`/`removes` are resolved).
    pub chdir: Option<String>,
    /// Skip the command when this path exists (`*` and `?` act as wildcards).
    pub creates: Option<String>,
    /// Skip the command when this path does not exist (`*` and `?` act as wildcards).
    pub removes: Option<String>,
    /// A shell command that decides: when it exits 0 the task is skipped. It runs in check mode
    /// too, so it must only read.
    pub unless: Option<String>,
    /// Text fed to the command's standard input.
    pub stdin: Option<String>,
    /// Add a newline after `stdin` (default true, as Ansible).
    pub stdin_add_newline: Option<bool>,
    /// Whether a successful run counts as a change (default true).
    pub changed_when: Option<bool>,
    /// Environment variables for the command (and for `unless`).
    pub env: Option<EnvVars>,
    /// The shell to run `cmd` with (default `/bin/sh`).
    pub executable: Option<String>,
}

pub const DOC: &str = r#"# shell

Runs a command line on the target with `/bin/sh -c`, so pipes, redirections, `&&` and variables
work. Prefer `command` when you do not need a shell.

The command runs every time unless a guard says otherwise: `creates` skips it when a path exists,
`removes` when a path is missing, and `unless` when a (read-only) command exits 0. The guards are
evaluated in one round trip, in check mode too; the command itself never runs in check mode.

A non-zero exit status fails the task with the rc and the last lines of stderr and stdout.

## Arguments

| name | type | |
|---|---|---|
| `cmd` | string | the command line (required) |
| `chdir` | string | directory to run in |
| `creates` | string | skip when this path (glob) exists |
| `removes` | string | skip when this path (glob) is missing |
| `unless` | string | skip when this command exits 0 |
| `stdin` | string | text for standard input |
| `stdin_add_newline` | bool | append a newline to `stdin` (default true) |
| `changed_when` | bool | report a change after a run (default true) |
| `env` | map | environment variables |
| `executable` | string | shell to use (default `/bin/sh`) |

## Result

`rc`, `stdout`, `stderr` (trailing newlines removed), `stdout_lines`, `stderr_lines`, `cmd`.

## Example

```rhai
shell(#{ cmd: "swapoff -a", unless: "test -z \"$(swapon --show)\"" })
shell(#{ cmd: "kubectl get nodes -o name | wc -l", changed_when: false })
```
"#;

impl RunArgs for Args {
    const NAME: &'static str = "shell";
    const DOC: &'static str = DOC;

    fn invocation(&self) -> Result<Invocation<'_>, String> {
        let sh = self.executable.as_deref().unwrap_or("/bin/sh");
        Ok(Invocation {
            script: format!("{} -c {}", quote(sh)?, quote(&self.cmd)?),
            display: self.cmd.clone(),
            cmd_value: Value::from(self.cmd.clone()),
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
            unless: self.unless.as_deref(),
        }
    }

    fn changed_when(&self) -> Option<bool> {
        self.changed_when
    }

    fn check(&self) -> Result<(), String> {
        if self.cmd.trim().is_empty() {
            return Err("cmd: is empty".into());
        }
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
    async fn runs_with_a_shell() {
        let env = Env::new();
        let out = env
            .apply(
                &Shell,
                json!({ "cmd": "printf 'a\\nb\\n' | wc -l; echo \"$X\" >&2", "env": {"X": "e"} }),
            )
            .await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(out.result["stdout"], "2");
        assert_eq!(out.result["stderr"], "e");
        assert_eq!(
            out.result["cmd"],
            "printf 'a\\nb\\n' | wc -l; echo \"$X\" >&2"
        );
    }

    #[tokio::test]
    async fn unless_skips_and_is_evaluated_in_check_mode() {
        let env = Env::new();
        let f = env.path("state");
        let args =
            json!({ "cmd": format!("echo on > '{f}'"), "unless": format!("grep -q on '{f}'") });
        let before = snapshot(env.dir.path());
        assert_eq!(env.check(&Shell, args.clone()).await, Status::Changed);
        assert_eq!(snapshot(env.dir.path()), before, "check mode wrote nothing");
        assert_eq!(
            env.apply(&Shell, args.clone()).await.status,
            Status::Changed
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "on\n");
        let again = env.apply(&Shell, args.clone()).await;
        assert_eq!(again.status, Status::Ok);
        assert!(again.result["msg"]
            .as_str()
            .unwrap()
            .starts_with("unless command succeeded"));
        assert_eq!(env.check(&Shell, args).await, again.status);
    }

    #[tokio::test]
    async fn creates_is_relative_to_chdir() {
        let env = Env::new();
        let args = json!({ "cmd": "echo x > made", "chdir": env.path(""), "creates": "made" });
        assert_eq!(
            env.apply(&Shell, args.clone()).await.status,
            Status::Changed
        );
        assert_eq!(std::fs::read_to_string(env.path("made")).unwrap(), "x\n");
        let again = env.apply(&Shell, args).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(again.result["msg"], "made exists");
    }

    #[tokio::test]
    async fn failure_names_rc() {
        let env = Env::new();
        let err = env
            .error(&Shell, json!({ "cmd": "echo nope >&2; exit 4" }))
            .await;
        assert!(err.contains("rc 4") && err.contains("nope"), "{err}");
        let err = env.error(&Shell, json!({ "command": "true" })).await;
        assert!(
            err.contains("unknown field `command`") && err.contains("`cmd`"),
            "{err}"
        );
    }
}
