//! A connected host as modules see it: its name and a way to run scripts on it, with privilege
//! escalation applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

pub use crate::connection::Become;
// Modules quote through `engine::host::quote`; the function lives apart so transports can use it.
pub use crate::quote::quote;
use crate::transport::{ExecOutput, Keep, Transport, TransportError, DEFAULT_KEEP_OUTPUT};

/// A script and what it reads on stdin (content to write, a command's input): one remote command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub stdin: Vec<u8>,
    /// It runs the user's command, which may print anything: its output is kept within the
    /// run's `--keep-output` ([`Host::keep`]). Internal scripts, whose output is read whole (a
    /// file's content), leave it false.
    pub bounded: bool,
}

/// Marks where sudo's password prompt ends, so the prompt never mixes with real output.
const SUDO_PROMPT: &str = "[playbook-sudo-prompt]";

/// Printed on stderr when `timeout` stopped a script: its exit status 124 alone could be the
/// script's own.
const TIMED_OUT: &str = "[playbook-timed-out]";

/// Every script carries `PLAYBOOK_COMMAND=<run>-<n>` in its environment, inherited by whatever it
/// starts, so a run stopped by Ctrl-C or SIGTERM can find and end the processes of the commands it
/// abandoned (neither the ssh mux protocol nor sudo passes a signal on to them). Per command, not
/// per run: a daemon a finished command left running is not ours to stop.
const COMMAND_ENV: &str = "PLAYBOOK_COMMAND";

static RUN_ID: LazyLock<String> = LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
});

static NEXT_COMMAND: AtomicU64 = AtomicU64::new(1);

/// Commands started and not seen to finish: the host (with the privileges they run with) and
/// their marker. A command whose future is dropped (a stopped run aborts its tasks) stays here.
static IN_FLIGHT: Mutex<Vec<(u64, Host, String)>> = Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<(u64, Host, String)>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the processes of every command in flight or abandoned (TERM, then KILL for what is left
/// half a second later), all hosts at once, giving each host `limit`. Called once a run was
/// stopped, before its connections close.
pub async fn stop_in_flight(limit: std::time::Duration) {
    let commands = std::mem::take(&mut *in_flight());
    // One script per host and privilege, naming all of its markers.
    let mut by_host: Vec<(Host, Vec<String>)> = Vec::new();
    for (_, host, marker) in commands {
        let same = |h: &Host| {
            h.name == host.name
                && h.become_.as_ref().map(|b| &b.user) == host.become_.as_ref().map(|b| &b.user)
        };
        match by_host.iter_mut().find(|(h, _)| same(h)) {
            Some((_, markers)) => markers.push(marker),
            None => by_host.push((host, vec![marker])),
        }
    }
    let mut stopping = tokio::task::JoinSet::new();
    for (host, markers) in by_host {
        stopping.spawn(async move {
            let script = stop_script(&markers);
            let _ = tokio::time::timeout(limit, host.run_as(&script, b"", &Keep::All)).await;
        });
    }
    while stopping.join_next().await.is_some() {}
}

/// Finds the processes whose environment holds one of `markers` (GNU grep reads the
/// NUL-separated environ files) and signals them.
fn stop_script(markers: &[String]) -> String {
    let patterns: String = markers
        .iter()
        .map(|m| format!(" -e {COMMAND_ENV}={m}"))
        .collect();
    format!(
        r#"ours() {{ for f in $(grep -lxzsF{patterns} /proc/[0-9]*/environ); do f=${{f#/proc/}}; echo "${{f%/environ}}"; done; }}
p=$(ours); [ -n "$p" ] || exit 0
kill -TERM $p 2>/dev/null; sleep 0.5
p=$(ours); [ -z "$p" ] || kill -KILL $p 2>/dev/null; exit 0
"#
    )
}

/// The time a task may still take: each command it sends gets what is left.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: std::time::Instant,
    /// The task's whole allowance, for the message.
    pub secs: u64,
}

impl Deadline {
    pub fn after(secs: u64) -> Self {
        Deadline {
            at: std::time::Instant::now() + std::time::Duration::from_secs(secs),
            secs,
        }
    }

    pub fn message(&self) -> String {
        format!("timed out after {} s", self.secs)
    }
}

#[derive(Clone)]
pub struct Host {
    pub name: String,
    transport: Arc<dyn Transport>,
    become_: Option<Become>,
    /// Exported for every script (a task's `environment`).
    env: std::collections::BTreeMap<String, String>,
    deadline: Option<Deadline>,
    /// Bytes kept per stream of a bounded script.
    keep_output: usize,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("name", &self.name).finish()
    }
}

impl Host {
    pub fn new(name: impl Into<String>, transport: Arc<dyn Transport>) -> Self {
        Host {
            name: name.into(),
            transport,
            become_: None,
            env: Default::default(),
            deadline: None,
            keep_output: DEFAULT_KEEP_OUTPUT,
        }
    }

    /// Bounded scripts keep at most `bytes` of each stream (`--keep-output`).
    pub fn with_keep_output(mut self, bytes: usize) -> Self {
        self.keep_output = bytes;
        self
    }

    /// How the output of a user's command is kept on this host; `until`: only what comes before
    /// it is bounded (see [`Keep::Bounded`]).
    pub fn keep(&self, until: Option<&str>) -> Keep {
        Keep::Bounded {
            limit: self.keep_output,
            until: until.map(|u| u.as_bytes().to_vec()),
        }
    }

    pub fn become_config(&self) -> Option<&Become> {
        self.become_.as_ref()
    }

    pub fn with_env(mut self, env: std::collections::BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// Every command after this stops (remote processes killed) when the deadline passes.
    pub fn with_deadline(mut self, deadline: Option<Deadline>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_become(mut self, become_: Option<Become>) -> Self {
        self.become_ = become_;
        self
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Runs a POSIX sh script on the host.
    pub async fn run(&self, script: &str) -> Result<ExecOutput, TransportError> {
        self.run_with_input(script, b"").await
    }

    pub async fn run_script(&self, script: &Script) -> Result<ExecOutput, TransportError> {
        let keep = match script.bounded {
            true => self.keep(None),
            false => Keep::All,
        };
        self.run_kept(&script.text, &script.stdin, &keep).await
    }

    /// Runs a POSIX sh script on the host, feeding it `stdin`.
    pub async fn run_with_input(
        &self,
        script: &str,
        stdin: &[u8],
    ) -> Result<ExecOutput, TransportError> {
        self.run_kept(script, stdin, &Keep::All).await
    }

    /// Runs a POSIX sh script on the host, feeding it `stdin`, keeping what `keep` says of its
    /// output.
    pub async fn run_kept(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        let id = NEXT_COMMAND.fetch_add(1, Ordering::Relaxed);
        let marker = format!("{}-{id}", *RUN_ID);
        let text = format!("export {COMMAND_ENV}={marker}\n");
        in_flight().push((id, self.clone(), marker));
        let out = self.run_marked(text, script, stdin, keep).await;
        in_flight().retain(|(started, ..)| *started != id);
        out
    }

    /// `run_kept` after the marker: the task's environment and deadline.
    async fn run_marked(
        &self,
        mut text: String,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        for (k, v) in &self.env {
            let v = quote(v)?;
            text.push_str(&format!("export {k}={v}\n"));
        }
        let Some(deadline) = self.deadline else {
            text.push_str(script);
            return self.run_as(&text, stdin, keep).await;
        };
        let left = deadline
            .at
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(TransportError::Exec(deadline.message()));
        }
        text.push_str(script);
        // coreutils `timeout` signals the script's whole process group, so what it started dies
        // with it; inside sudo, so it may signal root's processes. KILL follows TERM after 2 s.
        let inner = quote(&text)?;
        let secs = left.as_secs_f64().ceil() as u64;
        let marker = quote(TIMED_OUT).expect("constant quotes");
        let wrapped = format!(
            "timeout -k 2 {secs} /bin/sh -c {inner}\nrc=$?\n\
             if [ $rc -eq 124 ]; then printf '%s\\n' {marker} >&2; fi\nexit $rc"
        );
        // Should the target not stop it (a hung connection), the controller stops waiting.
        let limit = left + std::time::Duration::from_secs(5);
        let started = std::time::Instant::now();
        let mut out = tokio::time::timeout(limit, self.run_as(&wrapped, stdin, keep))
            .await
            .map_err(|_| TransportError::Exec(deadline.message()))??;
        // A script may exit 124 by itself; only one that ran until the limit was stopped.
        let marker = TIMED_OUT.as_bytes();
        if out.status == 124
            && started.elapsed() + std::time::Duration::from_millis(500) >= left
            && out.stderr.windows(marker.len()).any(|w| w == marker)
        {
            return Err(TransportError::Exec(deadline.message()));
        }
        if let Some(pos) = out.stderr.windows(marker.len()).position(|w| w == marker) {
            out.stderr
                .drain(pos..(pos + marker.len() + 1).min(out.stderr.len()));
        }
        Ok(out)
    }

    async fn run_as(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        match &self.become_ {
            None => self.transport.exec_kept(script, stdin, keep).await,
            Some(b) => {
                let user = quote(&b.user)?;
                let inner = quote(script)?;
                match &b.password {
                    None => {
                        let wrapped = format!("sudo -n -H -u {user} -- /bin/sh -c {inner}");
                        self.transport.exec_kept(&wrapped, stdin, keep).await
                    }
                    Some(pw) => {
                        // The password goes first on stdin, never on a command line.
                        let prompt = quote(SUDO_PROMPT).expect("constant quotes");
                        let wrapped =
                            format!("sudo -S -p {prompt} -H -u {user} -- /bin/sh -c {inner}");
                        let mut input = pw.expose().as_bytes().to_vec();
                        input.push(b'\n');
                        input.extend_from_slice(stdin);
                        let mut out = self.transport.exec_kept(&wrapped, &input, keep).await?;
                        strip_prompt(&mut out.stderr);
                        Ok(out)
                    }
                }
            }
        }
    }
}

fn strip_prompt(stderr: &mut Vec<u8>) {
    let marker = SUDO_PROMPT.as_bytes();
    if let Some(pos) = stderr.windows(marker.len()).position(|w| w == marker) {
        stderr.drain(pos..pos + marker.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    #[tokio::test]
    async fn become_prompt_is_stripped() {
        let mut err = b"[playbook-sudo-prompt]real error".to_vec();
        strip_prompt(&mut err);
        assert_eq!(err, b"real error");
        let host = Host::new("h", Arc::new(LocalTransport));
        assert_eq!(host.run("echo hi").await.unwrap().stdout, b"hi\n");
    }

    #[tokio::test]
    async fn environment_reaches_the_script_as_written_and_exit_124_is_not_a_timeout() {
        let host = Host::new("h", Arc::new(LocalTransport))
            .with_env([("A".to_string(), "x'y $z \"q\"".to_string())].into())
            .with_deadline(Some(Deadline::after(5)));
        let out = host.run("printf %s \"$A\"").await.unwrap();
        assert_eq!(out.stdout, b"x'y $z \"q\"");
        let out = host.run("echo own >&2; exit 124").await.unwrap();
        assert_eq!((out.status, out.stderr_text()), (124, "own\n".to_string()));
        let slow = Host::new("h", Arc::new(LocalTransport)).with_deadline(Some(Deadline::after(1)));
        let err = slow.run("sleep 5").await.unwrap_err();
        assert_eq!(err, TransportError::Exec("timed out after 1 s".into()));
    }
}
