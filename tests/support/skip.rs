//! Whether the lab can be used by this test process, and how a test that cannot run says so.
//!
//! Shared (by `#[path]`) by every crate's tests that skip, so a skip is counted the same way
//! everywhere: std only.
//!
//! A skipped test still passes in cargo's eyes; `tests/run` (the README's test command) sets
//! `PLAYBOOK_TEST_SKIP_LOG` to a file where every skip adds a line `REASON<TAB>TEST`, and counts
//! them apart in its closing line (`tests: N passed, 0 failed, K skipped (K lab not up)`).

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

pub const LAB_DIR: &str = "/srv/lab";

/// What this test process finds of the lab. Read anew on each call: tests make the systemd
/// hosts again (under the in-process lab lock), and lab.sh lists a host in its state only while
/// it answers.
#[derive(Debug, Clone)]
pub enum LabStatus {
    /// `PLAYBOOK_TEST_NO_LAB=1`: a second test run beside one that owns the lab.
    Disabled,
    /// No lab state (tests/lab/lab.sh up was not run, or down was).
    NotUp,
    /// Another process (a test run, the benchmark) holds the lab's lock.
    InUse,
    /// The state file names hosts that do not answer on port 22.
    HalfUp(String),
    /// Up: light hosts h1..hN, systemd hosts s1..sM.
    Up { light: usize, systemd: usize },
}

impl LabStatus {
    /// Why a lab test cannot run, as the closing line counts it.
    pub fn reason(&self) -> &'static str {
        match self {
            LabStatus::Disabled => "PLAYBOOK_TEST_NO_LAB=1",
            LabStatus::NotUp => "lab not up",
            LabStatus::InUse => "lab in use by another run",
            LabStatus::HalfUp(_) => "lab half up",
            LabStatus::Up { .. } => "the lab lacks what the test needs",
        }
    }
}

/// The lab's lock, held by this process from its first look at the lab until it exits, so two
/// test runs (or a test run and `bench/run.sh`) never share the hosts.
static LOCK: OnceLock<Option<std::fs::File>> = OnceLock::new();

pub fn lab_status() -> LabStatus {
    if std::env::var_os("PLAYBOOK_TEST_NO_LAB").is_some_and(|v| v == "1") {
        return LabStatus::Disabled;
    }
    let Ok(state) = std::fs::read_to_string(format!("{LAB_DIR}/state")) else {
        return LabStatus::NotUp;
    };
    let field = |k: &str| -> Option<String> {
        state.lines().find_map(|l| {
            l.strip_prefix(&format!("{k}="))
                .map(|v| v.trim().to_string())
        })
    };
    let lock = LOCK.get_or_init(|| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{LAB_DIR}/lock"))
            .ok()?;
        file.try_lock().ok()?;
        Some(file)
    });
    if lock.is_none() {
        return LabStatus::InUse;
    }
    let light = match field("mode").as_deref() {
        Some("light") => field("count").and_then(|n| n.parse().ok()).unwrap_or(0),
        _ => 0,
    };
    let systemd: usize = field("systemd_count")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let hosts = (1..=light.min(100))
        .map(|i| (format!("h{i}"), format!("10.77.0.{}", 10 + i)))
        .chain((1..=systemd.min(50)).map(|i| (format!("s{i}"), format!("10.77.0.{}", 200 + i))));
    for (name, addr) in hosts {
        let sock: SocketAddr = format!("{addr}:22").parse().unwrap();
        if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
            return LabStatus::HalfUp(format!("{name} ({addr}) does not answer on port 22"));
        }
    }
    LabStatus::Up { light, systemd }
}

/// A test that cannot run here says why, on stderr and in the skip log, and the caller returns.
pub fn skip(reason: &str, test: &str, detail: &str) {
    eprintln!("{test}: {detail}: skipped ({reason})");
    if let Some(path) = std::env::var_os("PLAYBOOK_TEST_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{reason}\t{test}");
        }
    }
}

/// A lab test cannot run here (the lab is not up, too small, half up or in use): it says so and
/// the caller returns. With `PLAYBOOK_TEST_REQUIRE_LAB=1` (CI, which brings the lab up) it fails
/// instead, so a lab test cannot pass by skipping; `PLAYBOOK_TEST_NO_LAB=1` wins over that.
pub fn lab_skip(test: &str, detail: &str) {
    let status = lab_status();
    if !matches!(status, LabStatus::Disabled)
        && std::env::var_os("PLAYBOOK_TEST_REQUIRE_LAB").is_some_and(|v| v == "1")
    {
        panic!("{test}: {detail} ({status:?}): the lab is required (PLAYBOOK_TEST_REQUIRE_LAB=1)");
    }
    let detail = match &status {
        LabStatus::HalfUp(why) => format!("{detail}; {why}"),
        _ => detail.to_string(),
    };
    skip(status.reason(), test, &detail);
}
