//! Commands over SSH: one OpenSSH ControlMaster per host (the `openssh` crate with native mux),
//! shared by every command run on that host.
//!
//! * The system `ssh` does the connecting, so the user's `~/.ssh/config` is honoured; the options
//!   set here (user, port, identity, known hosts, host key policy, timeouts) are passed with `-o`
//!   and override it. `BatchMode=yes`: ssh never prompts on the controller's terminal.
//! * Host keys are verified against known_hosts (`StrictHostKeyChecking=yes`) unless
//!   [`SshOptions::accept_new_host_keys`] asks for `accept-new`.
//! * Handshakes are bounded per destination ([`MAX_HANDSHAKES_PER_DESTINATION`]) and process-wide
//!   ([`MAX_CONCURRENT_HANDSHAKES`]), and transient failures
//!   (sshd's `MaxStartups` dropping a burst of connections) are retried with backoff. Host key and
//!   authentication failures are never retried.
//! * Masters live in a private directory (mode 0700) under the temp dir, use a bounded
//!   `ControlPersist` ([`CONTROL_PERSIST`]) so that even a killed controller leaves nothing
//!   running for long, and are shut down by [`Transport::close`] or on drop: no `ssh` process
//!   outlives its [`SshTransport`].

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::{kept, ExecOutput, Keep, Transport, TransportError};
use crate::quote::quote;

/// How many SSH handshakes may run at once to one destination (address and port). sshd's default
/// `MaxStartups 10:30:100` starts dropping unauthenticated connections beyond 10, so bursts to one
/// sshd are both limited here and retried.
pub const MAX_HANDSHAKES_PER_DESTINATION: usize = 8;

/// How many SSH handshakes may run at once in this process, to all destinations: many hosts
/// connect together, while the ssh processes starting at once stay bounded.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 48;

/// Attempts per connection (the first one and up to four retries of transient failures).
pub const CONNECT_ATTEMPTS: u32 = 5;

/// Commands running at once over one master: sshd's default `MaxSessions` is 10 and it refuses
/// more channels on one connection; further commands wait for a free one.
pub const MAX_SESSIONS_PER_MASTER: usize = 10;

/// How long a master stays up without any command running on it. A master that ended this way is
/// reconnected transparently by the next command; it bounds what a killed controller leaves behind.
pub const CONTROL_PERSIST: Duration = Duration::from_secs(300);

/// `ServerAliveInterval`: a host that stops answering is noticed after three missed probes.
const SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// First retry delay; doubled for every further attempt, plus up to 100 % random jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

static HANDSHAKES: Semaphore = Semaphore::const_new(MAX_CONCURRENT_HANDSHAKES);

/// The handshake limit of each destination, made on first use.
static DESTINATION_HANDSHAKES: Mutex<BTreeMap<String, Arc<Semaphore>>> =
    Mutex::new(BTreeMap::new());

fn destination_handshakes(host: &str, port: Option<u16>) -> Arc<Semaphore> {
    let key = format!("{host}:{}", port.unwrap_or(22));
    DESTINATION_HANDSHAKES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert_with(|| Arc::new(Semaphore::new(MAX_HANDSHAKES_PER_DESTINATION)))
        .clone()
}

/// How to reach one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// Address or name (ssh config aliases allowed).
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Used alone (`IdentitiesOnly=yes`) when given.
    pub identity_file: Option<PathBuf>,
    /// A `UserKnownHostsFile`; `None` = the user's default.
    pub known_hosts: Option<PathBuf>,
    /// `false`: `StrictHostKeyChecking=yes` (the default); `true`: `accept-new`, which records
    /// unknown keys in the known_hosts file but still refuses changed ones.
    pub accept_new_host_keys: bool,
    /// `ConnectTimeout` (whole seconds, rounded up); also bounds the key exchange.
    pub connect_timeout: Duration,
    /// Limit for one command; `None` = no limit. The error is returned at the limit, but the
    /// remote command is not killed (the mux protocol cannot signal it): it runs on until it ends
    /// or writes to its closed output.
    pub command_timeout: Option<Duration>,
}

impl SshOptions {
    /// Options for `host` with the defaults: strict host key checking against the user's
    /// known_hosts, 10 s to connect, no command time limit.
    pub fn new(host: impl Into<String>) -> Self {
        SshOptions {
            host: host.into(),
            port: None,
            user: None,
            identity_file: None,
            known_hosts: None,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: None,
        }
    }

    /// `user@host[:port]` for messages.
    pub fn destination(&self) -> String {
        let mut d = String::new();
        if let Some(u) = &self.user {
            d.push_str(u);
            d.push('@');
        }
        d.push_str(&self.host);
        if let Some(p) = self.port {
            d.push_str(&format!(":{p}"));
        }
        d
    }
}

/// A host reached over SSH through one ControlMaster.
pub struct SshTransport {
    opts: SshOptions,
    state: tokio::sync::Mutex<State>,
    /// When the last command started or ended (for the ControlPersist idle expiry).
    last_used: Mutex<Instant>,
    master_pid: AtomicU32,
    connect_attempts: u32,
}

struct State {
    master: Option<Arc<Master>>,
    closed: bool,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("destination", &self.opts.destination())
            .field("master_pid", &self.master_pid())
            .finish()
    }
}

impl SshTransport {
    /// Starts the master connection. Failures to reach the host (refused, timed out, host key,
    /// authentication) are [`TransportError::Unreachable`] with ssh's own message.
    pub async fn connect(opts: &SshOptions) -> Result<SshTransport, TransportError> {
        let (master, attempts) = Master::launch(opts).await?;
        Ok(SshTransport {
            opts: opts.clone(),
            master_pid: AtomicU32::new(master.pid.unwrap_or(0)),
            state: tokio::sync::Mutex::new(State {
                master: Some(Arc::new(master)),
                closed: false,
            }),
            last_used: Mutex::new(Instant::now()),
            connect_attempts: attempts,
        })
    }

    pub fn options(&self) -> &SshOptions {
        &self.opts
    }

    /// The local PID of the ssh master process, if it could be asked (`None` once closed).
    pub fn master_pid(&self) -> Option<u32> {
        match self.master_pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// How many attempts the first connection needed (1 = no retry).
    pub fn connect_attempts(&self) -> u32 {
        self.connect_attempts
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// The master to run the next command on; reconnects once if the master ended itself
    /// after [`CONTROL_PERSIST`] of idleness.
    async fn master(&self) -> Result<Arc<Master>, TransportError> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(TransportError::Exec(format!(
                "the ssh connection to {} is closed",
                self.opts.destination()
            )));
        }
        let current = state.master.clone();
        let master = match current {
            Some(m)
                if self.idle_for() + Duration::from_secs(5) < CONTROL_PERSIST
                    || m.alive().await =>
            {
                m
            }
            old => {
                drop(old);
                state.master = None;
                let (m, _) = Master::launch(&self.opts).await?;
                let m = Arc::new(m);
                self.master_pid.store(m.pid.unwrap_or(0), Ordering::Relaxed);
                state.master = Some(m.clone());
                m
            }
        };
        self.touch();
        Ok(master)
    }

    async fn run(
        &self,
        master: &Master,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        let quoted = quote(script)?;
        let session = master.session.as_ref().expect("live master has a session");
        let _channel = master
            .channels
            .acquire()
            .await
            .expect("semaphore never closed");
        // ssh sends the command as one string that the remote login shell parses again: the
        // script is quoted exactly once, here, and passed raw.
        let mut cmd = session.raw_command("/bin/sh");
        cmd.raw_arg("-c")
            .raw_arg(&quoted)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut attempt = 0;
        let mut child = loop {
            attempt += 1;
            match cmd.spawn().await {
                Ok(child) => break child,
                // A server with a lower MaxSessions refuses the channel: nothing ran yet, so
                // waiting and asking again is safe.
                Err(e) if attempt < CONNECT_ATTEMPTS && describe(&e).contains("open refused") => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.failure(master, "starting the command", &e).await),
            }
        };
        let input = child.stdin().take();
        let feed = async move {
            if let Some(mut input) = input {
                // A script that does not read its input closes the channel early: not an error.
                let _ = input.write_all(stdin).await;
                let _ = input.shutdown().await;
            }
        };
        let (_, stdout, stderr) = tokio::join!(
            feed,
            kept::read(child.stdout().take(), keep),
            kept::read(child.stderr().take(), keep)
        );
        let stdout = stdout.map_err(|e| TransportError::Exec(format!("reading stdout: {e}")))?;
        let kept::Kept {
            bytes: mut stderr,
            cut: stderr_cut,
        } = stderr.map_err(|e| TransportError::Exec(format!("reading stderr: {e}")))?;
        // Only now, with both streams at their end, ask for the exit status.
        let status = match child.wait().await {
            Ok(status) => status.code().unwrap_or(-1),
            // openssh turns exit status 127 into an error; for a script it is just a status.
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => 127,
            Err(openssh::Error::RemoteProcessTerminated) if master.alive().await => {
                if !stderr.is_empty() && !stderr.ends_with(b"\n") {
                    stderr.push(b'\n');
                }
                stderr.extend_from_slice(
                    b"playbook: the remote command was killed by a signal (ssh reported no exit status)\n",
                );
                -1
            }
            Err(e) => return Err(self.failure(master, "waiting for the command", &e).await),
        };
        Ok(ExecOutput {
            status,
            stdout: stdout.bytes,
            stderr,
            stdout_cut: stdout.cut,
            stderr_cut,
        })
    }

    /// An openssh error during a command: Unreachable when the master is gone (with ssh's own
    /// reason from the master's log), Exec otherwise.
    async fn failure(&self, master: &Master, doing: &str, e: &openssh::Error) -> TransportError {
        if master.alive().await {
            TransportError::Exec(format!("ssh: {doing}: {}", describe(e)))
        } else {
            TransportError::Unreachable(master.lost_reason(&self.opts))
        }
    }
}

#[async_trait]
impl Transport for SshTransport {
    async fn exec_kept(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        let master = self.master().await?;
        let result = match self.opts.command_timeout {
            None => self.run(&master, script, stdin, keep).await,
            Some(limit) => {
                match tokio::time::timeout(limit, self.run(&master, script, stdin, keep)).await {
                    Ok(result) => result,
                    Err(_) => Err(TransportError::Exec(format!("timed out after {limit:?}"))),
                }
            }
        };
        self.touch();
        result
    }

    async fn close(&self) {
        let master = {
            let mut state = self.state.lock().await;
            state.closed = true;
            state.master.take()
        };
        self.master_pid.store(0, Ordering::Relaxed);
        if let Some(master) = master {
            match Arc::try_unwrap(master) {
                Ok(master) => master.shutdown().await,
                // A command still runs (close raced with exec): end the master now; the
                // command then reports the host unreachable.
                Err(shared) => shared.terminate(),
            }
        }
    }
}

/// One ControlMaster: the openssh session, its socket and log, and the ssh process.
struct Master {
    /// `None` only after an explicit shutdown.
    session: Option<Session>,
    log: PathBuf,
    pid: Option<u32>,
    /// The master's start time (see `start_time`), to know it is still the same process.
    started: Option<u64>,
    /// Limits concurrent commands to [`MAX_SESSIONS_PER_MASTER`].
    channels: Semaphore,
    /// Keeps the private control directory while this master lives (dropped last).
    _root: Arc<TempDir>,
}

impl Master {
    async fn launch(opts: &SshOptions) -> Result<(Master, u32), TransportError> {
        if opts.host.is_empty()
            || opts.host.starts_with('-')
            || opts
                .host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(TransportError::Unreachable(format!(
                "invalid ssh host name {:?}",
                opts.host
            )));
        }
        let root = control_root()?;
        let mut b = SessionBuilder::default();
        b.control_directory(root.path())
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(CONTROL_PERSIST.as_secs() as usize).expect("non-zero"),
            ))
            .known_hosts_check(if opts.accept_new_host_keys {
                KnownHosts::Add
            } else {
                KnownHosts::Strict
            })
            .connect_timeout(round_up_secs(opts.connect_timeout))
            .server_alive_interval(SERVER_ALIVE_INTERVAL);
        if let Some(user) = &opts.user {
            b.user(user.clone());
        }
        if let Some(port) = opts.port {
            b.port(port);
        }
        if let Some(key) = &opts.identity_file {
            b.keyfile(key);
        }
        if let Some(known) = &opts.known_hosts {
            b.user_known_hosts_file(known);
        }
        // ConnectTimeout covers TCP and the key exchange; this also bounds authentication.
        let guard = round_up_secs(opts.connect_timeout) * 3 + Duration::from_secs(10);

        let destination = destination_handshakes(&opts.host, opts.port);
        let mut attempt = 0;
        let session = loop {
            attempt += 1;
            let result = {
                let _to_destination = destination.acquire().await.expect("semaphore never closed");
                let _permit = HANDSHAKES.acquire().await.expect("semaphore never closed");
                tokio::time::timeout(guard, b.connect_mux(&opts.host)).await
            };
            let reason = match result {
                Ok(Ok(session)) => break session,
                Ok(Err(e)) => connect_reason(&e),
                Err(_) => {
                    return Err(TransportError::Unreachable(format!(
                        "ssh to {} did not finish connecting within {guard:?}",
                        opts.destination()
                    )))
                }
            };
            if attempt < CONNECT_ATTEMPTS && is_transient(&reason) {
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            return Err(TransportError::Unreachable(reason));
        };

        let ctl = session.control_socket().to_path_buf();
        let log = ctl.with_file_name("log");
        let pid = match openssh_mux_client::Connection::connect(&ctl).await {
            Ok(mut conn) => conn.send_alive_check().await.ok().map(|p| p.get()),
            Err(_) => None,
        };
        let started = pid.and_then(start_time);
        Ok((
            Master {
                session: Some(session),
                log,
                pid,
                started,
                channels: Semaphore::new(MAX_SESSIONS_PER_MASTER),
                _root: root,
            },
            attempt,
        ))
    }

    async fn alive(&self) -> bool {
        match &self.session {
            Some(s) => s.check().await.is_ok(),
            None => false,
        }
    }

    /// ssh's own words on why the connection ended, from the master's log.
    fn lost_reason(&self, opts: &SshOptions) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let reason = clean_ssh_message(&log);
        if reason.is_empty() {
            format!("the ssh connection to {} was lost", opts.destination())
        } else {
            reason
        }
    }

    /// Asks the master to exit, waits for it, and terminates it if it lingers.
    async fn shutdown(mut self) {
        if let Some(session) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.running() {
            if Instant::now() >= deadline {
                self.terminate();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether our master process still runs (the same process, not a reused PID).
    fn running(&self) -> bool {
        match (self.pid, self.started) {
            (Some(pid), Some(started)) => start_time(pid) == Some(started),
            _ => false,
        }
    }

    /// SIGTERM to the master, if that PID is still our ssh.
    fn terminate(&self) {
        if let Some(pid) = self.pid {
            if self.running() {
                // SAFETY: plain kill(2) on a PID just checked to be our own ssh master.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // openssh's own drop asks the master to stop listening (synchronously) and removes
            // the control directory; the master could still linger, so end it for sure.
            drop(session);
            self.terminate();
        }
    }
}

/// The private directory holding this process's control sockets: created on first use (mode
/// 0700), removed when the last master using it is gone.
fn control_root() -> Result<Arc<TempDir>, TransportError> {
    static ROOT: Mutex<Weak<TempDir>> = Mutex::new(Weak::new());
    let mut slot = ROOT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = slot.upgrade() {
        return Ok(dir);
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("playbook-ssh-{}-", std::process::id()))
        .tempdir()
        .map_err(|e| {
            TransportError::Unreachable(format!("cannot create the ssh control directory: {e}"))
        })?;
    let dir = Arc::new(dir);
    *slot = Arc::downgrade(&dir);
    Ok(dir)
}

/// The kernel's start time of a live (not zombie) process. With the PID it names one process for
/// good: a master renames itself once told to stop (`ssh: [stopped mux]`), so its command line
/// cannot identify it, and a PID alone could be reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is the start time.
    if matches!(fields.first(), None | Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn connect_reason(e: &openssh::Error) -> String {
    match e {
        // The text is ssh's own stderr (its -E log).
        openssh::Error::Connect(io) => {
            let msg = clean_ssh_message(&io.to_string());
            if msg.is_empty() {
                describe(e)
            } else {
                msg
            }
        }
        other => describe(other),
    }
}

/// ssh's messages without carriage returns, `Warning: Permanently added` notes and blank lines.
fn clean_ssh_message(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .map(|l| l.strip_prefix("ssh: ").unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failed handshake worth another try: the server dropped the connection before or during key
/// exchange (sshd's MaxStartups). Host key and authentication failures are final.
fn is_transient(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    if r.contains("host key")
        || r.contains("permission denied")
        || r.contains("authentication")
        || r.contains("timed out")
    {
        return false;
    }
    [
        "kex_exchange_identification",
        "ssh_exchange_identification",
        "connection reset",
        "connection closed by",
        "broken pipe",
    ]
    .iter()
    .any(|m| r.contains(m))
}

fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_BASE * 2u32.pow(attempt.saturating_sub(1).min(6));
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % (base.as_millis() as u64 + 1);
    base + Duration::from_millis(jitter)
}

fn round_up_secs(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

fn describe(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_limited_per_destination() {
        let a = destination_handshakes("10.9.9.1", None);
        assert!(Arc::ptr_eq(
            &a,
            &destination_handshakes("10.9.9.1", Some(22))
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &destination_handshakes("10.9.9.1", Some(2222))
        ));
        assert!(!Arc::ptr_eq(&a, &destination_handshakes("10.9.9.2", None)));
        assert_eq!(a.available_permits(), MAX_HANDSHAKES_PER_DESTINATION);
    }

    #[test]
    fn transient_failures_are_told_apart() {
        assert!(is_transient(
            "kex_exchange_identification: read: Connection reset by peer"
        ));
        assert!(is_transient(
            "kex_exchange_identification: Connection closed by remote host\nConnection closed by 10.77.0.11 port 22"
        ));
        assert!(!is_transient("Host key verification failed."));
        assert!(!is_transient(
            "root@10.77.0.11: Permission denied (publickey)."
        ));
        assert!(!is_transient(
            "connect to host 10.77.0.12 port 22: Connection refused"
        ));
        assert!(!is_transient(
            "connect to host 10.77.0.99 port 22: Connection timed out"
        ));
    }

    #[test]
    fn ssh_messages_are_cleaned() {
        assert_eq!(
            clean_ssh_message(
                "Warning: Permanently added '10.77.0.11' (ED25519) to the list of known hosts.\r\nssh: connect to host x port 22: Connection refused\r\n"
            ),
            "connect to host x port 22: Connection refused"
        );
    }

    #[test]
    fn backoff_grows_and_timeouts_round_up() {
        assert!(backoff(1) >= BACKOFF_BASE && backoff(1) <= BACKOFF_BASE * 2);
        assert!(backoff(4) >= BACKOFF_BASE * 8);
        assert_eq!(
            round_up_secs(Duration::from_millis(1500)),
            Duration::from_secs(2)
        );
        assert_eq!(round_up_secs(Duration::ZERO), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn bad_host_names_are_refused_before_ssh_runs() {
        let err = SshTransport::connect(&SshOptions::new("-oProxyCommand=x"))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable(ref m) if m.contains("invalid")));
    }
}
