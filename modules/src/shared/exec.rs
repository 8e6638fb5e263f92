//! What `command` and `shell` share: the guards that decide whether a command runs (`creates`,
//! `removes`, `unless`), evaluated in one round trip, and running the command itself.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::host::{quote, Script};
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde_json::{json, Value};

/// Environment variables for a command: names to scalar values.
pub type EnvVars = BTreeMap<String, Value>;

/// How many trailing lines of output an error message shows.
const TAIL_LINES: usize = 20;

/// Checks an environment map without a host.
pub fn check_env(env: &Option<EnvVars>) -> Result<(), String> {
    for (k, v) in env.iter().flatten() {
        if !crate::shared::names::is_var_name(k) {
            return Err(format!("env: {k:?} is not a valid variable name"));
        }
        if v.is_object() || v.is_array() {
            return Err(format!("env: {k} must be a string, number or bool"));
        }
    }
    Ok(())
}

fn env_exports(env: &Option<EnvVars>) -> Result<String, String> {
    let mut s = String::new();
    for (k, v) in env.iter().flatten() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        s += &format!("export {k}={}\n", quote(&text)?);
    }
    Ok(s)
}

fn cd(chdir: Option<&str>) -> Result<String, String> {
    Ok(match chdir {
        Some(d) => format!(
            "cd -- {q} || {{ echo \"cannot change directory to \"{q} >&2; exit 126; }}\n",
            q = quote(d)?
        ),
        None => String::new(),
    })
}

/// A path for a `for` list: literal parts quoted, `*` and `?` left to the shell as wildcards
/// (as Ansible's `creates` accepts globs).
fn glob_word(path: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut literal = String::new();
    for c in path.chars() {
        if c == '*' || c == '?' {
            if !literal.is_empty() {
                out += &quote(&literal)?;
                literal.clear();
            }
            out.push(c);
        } else {
            literal.push(c);
        }
    }
    if !literal.is_empty() || out.is_empty() {
        out += &quote(&literal)?;
    }
    Ok(out)
}

/// The conditions under which a command is skipped.
#[derive(Debug, Default)]
pub struct Guards<'a> {
    /// Skip when this path (or glob) exists.
    pub creates: Option<&'a str>,
    /// Skip when this path (or glob) does not exist.
    pub removes: Option<&'a str>,
    /// Skip when this shell command exits 0.
    pub unless: Option<&'a str>,
}

/// How a command runs.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The command line, already quoted for sh.
    pub script: String,
    /// The command as the user wrote it, for messages.
    pub display: String,
    /// The `cmd` field of the result.
    pub cmd_value: Value,
    pub chdir: Option<&'a str>,
    pub env: &'a Option<EnvVars>,
    pub stdin: Option<&'a str>,
    pub stdin_add_newline: bool,
}

impl Invocation<'_> {
    /// The script that evaluates the guards (reads only), or None without guards. Relative guard
    /// paths are relative to `chdir`. When `chdir` does not exist (yet), the guards are not
    /// evaluated: the run itself reports the missing directory.
    pub fn guard_script(&self, g: &Guards<'_>) -> Result<Option<String>, ModuleError> {
        if g.creates.is_none() && g.removes.is_none() && g.unless.is_none() {
            return Ok(None);
        }
        let mut s = env_exports(self.env).map_err(ModuleError::Args)?;
        if let Some(d) = self.chdir {
            s += &format!(
                "cd -- {} 2>/dev/null || {{ echo run; exit 0; }}\n",
                quote(d)?
            );
        }
        if let Some(c) = g.creates {
            s += &format!(
                "for f in {}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then echo creates; exit 0; fi; done\n",
                glob_word(c).map_err(ModuleError::Args)?
            );
        }
        if let Some(r) = g.removes {
            s += &format!(
                "found=; for f in {}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then found=1; fi; done\n\
                 if [ -z \"$found\" ]; then echo removes; exit 0; fi\n",
                glob_word(r).map_err(ModuleError::Args)?
            );
        }
        if let Some(u) = g.unless {
            s += &format!(
                "if /bin/sh -c {} >/dev/null 2>&1 </dev/null; then echo unless; exit 0; fi\n",
                quote(u)?
            );
        }
        s += "echo run\n";
        Ok(Some(s))
    }

    /// The reason to skip, if a guard says so, from the output of `guard_script`.
    pub fn skip_reason(
        g: &Guards<'_>,
        out: Option<&ExecOutput>,
    ) -> Result<Option<String>, ModuleError> {
        let Some(out) = out else {
            return Ok(None);
        };
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot evaluate creates/removes/unless: {}",
                out.stderr_text().trim()
            )));
        }
        Ok(match out.stdout_text().trim() {
            "creates" => Some(format!("{} exists", g.creates.unwrap_or_default())),
            "removes" => Some(format!("{} does not exist", g.removes.unwrap_or_default())),
            "unless" => Some(format!(
                "unless command succeeded: {}",
                g.unless.unwrap_or_default()
            )),
            _ => None,
        })
    }

    /// The script that runs the command, with its input.
    pub fn run_script(&self) -> Result<Script, ModuleError> {
        let text = format!(
            "{}{}exec {}\n",
            env_exports(self.env).map_err(ModuleError::Args)?,
            cd(self.chdir).map_err(ModuleError::Args)?,
            self.script
        );
        let mut stdin = self.stdin.unwrap_or_default().as_bytes().to_vec();
        if self.stdin.is_some() && self.stdin_add_newline {
            stdin.push(b'\n');
        }
        Ok(Script {
            text,
            stdin,
            bounded: true,
        })
    }

    /// The result of `run_script` from its output. A non-zero exit is an error naming the rc and
    /// the output's last lines.
    pub fn result(&self, out: &ExecOutput) -> Result<Value, ModuleError> {
        let stdout = out.stdout_text().trim_end_matches(['\r', '\n']).to_string();
        let stderr = out.stderr_text().trim_end_matches(['\r', '\n']).to_string();
        if !out.success() {
            let mut msg = format!("{} failed with rc {}", self.display, out.status);
            for (name, text) in [("stderr", &stderr), ("stdout", &stdout)] {
                if !text.trim().is_empty() {
                    msg += &format!("\n{name}:\n{}", tail(text));
                }
            }
            return Err(ModuleError::Failed(msg));
        }
        Ok(json!({
            "cmd": self.cmd_value,
            "rc": out.status,
            "stdout_lines": stdout.lines().collect::<Vec<_>>(),
            "stderr_lines": stderr.lines().collect::<Vec<_>>(),
            "stdout": stdout,
            "stderr": stderr,
            "stdout_cut": out.stdout_cut,
            "stderr_cut": out.stderr_cut,
        }))
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    let skip = lines.len().saturating_sub(TAIL_LINES);
    let mut out = if skip > 0 {
        format!("[{skip} earlier lines not shown]\n")
    } else {
        String::new()
    };
    out += &lines[skip..].join("\n");
    out
}

/// The decision of `command` and `shell` from their guards' output (`Invocation::guard_script`):
/// a guard that holds means the host is already as the command would make it (ok, as in
/// Ansible); otherwise the command would run (a change), except that in check mode a command
/// marked `changed_when: false` is not run and not predicted as a change — it is skipped with the
/// reason (a task marked `.check_mode(false)` runs for real).
pub fn decide(
    inv: &Invocation<'_>,
    guards: &Guards<'_>,
    changed_when: Option<bool>,
    out: Option<&ExecOutput>,
    cx: &ModuleContext<'_>,
) -> Result<Probe<()>, ModuleError> {
    Ok(match Invocation::skip_reason(guards, out)? {
        Some(reason) => Probe::Unchanged(
            json!({ "msg": reason, "rc": 0, "stdout": "", "stderr": "", "stdout_lines": [],
                     "stdout_cut": 0, "stderr_cut": 0 }),
        ),
        None if cx.check && changed_when == Some(false) => Probe::Skipped(format!(
            "not run in check mode: {} (mark a command that only reads with .check_mode(false))",
            inv.display
        )),
        None => Probe::change((), format!("run: {}", inv.display), None),
    })
}

/// What the run of `command` and `shell` (`Invocation::run_script`) did; `changed_when` decides
/// the report.
pub fn applied(
    inv: &Invocation<'_>,
    changed_when: Option<bool>,
    out: &ExecOutput,
) -> Result<Applied, ModuleError> {
    Ok(Applied {
        changed: changed_when.unwrap_or(true),
        result: inv.result(out)?,
    })
}

/// What `command` and `shell` differ in: their arguments and how those make the command line.
/// Everything else is one module, [`Run`].
pub trait RunArgs: serde::de::DeserializeOwned + Send + Sync + 'static {
    const NAME: &'static str;
    const DOC: &'static str;
    fn invocation(&self) -> Result<Invocation<'_>, String>;
    fn guards(&self) -> Guards<'_>;
    fn changed_when(&self) -> Option<bool>;
    /// Checks beyond a valid invocation (`shell`: a non-empty `cmd`).
    fn check(&self) -> Result<(), String>;
}

/// The module that runs a command with guards, for the arguments `A` (`command::Args`,
/// `shell::Args`).
pub struct Run<A>(std::marker::PhantomData<fn() -> A>);

impl<A> Run<A> {
    pub const fn new() -> Self {
        Run(std::marker::PhantomData)
    }
}

#[async_trait]
impl<A: RunArgs> Module for Run<A> {
    const NAME: &'static str = A::NAME;
    const DOC: &'static str = A::DOC;
    type Args = A;
    type Plan = ();

    fn check_args(args: &A) -> Result<(), String> {
        args.check()?;
        args.invocation().map(|_| ())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &A,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let inv = args.invocation().map_err(ModuleError::Args)?;
        inv.guard_script(&args.guards())
    }

    async fn decide(
        &self,
        args: &A,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<()>, ModuleError> {
        let inv = args.invocation().map_err(ModuleError::Args)?;
        decide(&inv, &args.guards(), args.changed_when(), out.as_ref(), cx)
    }

    const SCRIPT_APPLY: bool = true;

    fn apply_script(
        &self,
        args: &A,
        _plan: &(),
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        args.invocation().map_err(ModuleError::Args)?.run_script()
    }

    async fn applied(
        &self,
        args: &A,
        _plan: (),
        out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let inv = args.invocation().map_err(ModuleError::Args)?;
        applied(&inv, args.changed_when(), &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_words_quote_literals_only() {
        assert_eq!(glob_word("/var/log/*.log").unwrap(), "/var/log/*.log");
        assert_eq!(glob_word("/a b/*").unwrap(), "'/a b/'*");
        assert_eq!(glob_word("$(x)?").unwrap(), "'$(x)'?");
        assert_eq!(glob_word("").unwrap(), "''");
    }

    #[test]
    fn env_names_and_values_are_checked() {
        let mut env = EnvVars::new();
        env.insert("OK_1".into(), json!(3));
        assert!(check_env(&Some(env.clone())).is_ok());
        env.insert("1BAD".into(), json!("x"));
        assert!(check_env(&Some(env)).unwrap_err().contains("1BAD"));
        let nested = EnvVars::from([("A".to_string(), json!({"b": 1}))]);
        assert!(check_env(&Some(nested)).is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (0..30).map(|i| format!("l{i}\n")).collect();
        let t = tail(&text);
        assert!(t.starts_with("[10 earlier lines not shown]\nl10\n"), "{t}");
        assert!(t.ends_with("l29"));
    }
}
