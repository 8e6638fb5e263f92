//! `wait_for`: waits, from the target, until a TCP port is open or closed, a path exists or not,
//! or a URL answers 200. It only reads, so it runs in check mode too and is never `changed`.

use std::time::{Duration, Instant};

use crate::NoChange;
use async_trait::async_trait;
use engine::host::quote;
use engine::{Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::json;

pub struct WaitFor;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A TCP port to wait for (give one of `port`, `path`, `url`).
    pub port: Option<u16>,
    /// The address whose `port` is checked, as seen from the target. Default 127.0.0.1.
    pub host: Option<String>,
    /// A path on the target to wait for.
    pub path: Option<String>,
    /// An http(s) URL that must answer with status 200 (fetched with `curl` on the target).
    pub url: Option<String>,
    /// A CA certificate file on the target to verify the `url`'s TLS certificate with.
    pub ca_cert: Option<String>,
    /// For `port`: "started" (open, the default) or "stopped" (closed). For `path`: "present"
    /// (the default) or "absent".
    pub state: Option<String>,
    /// Seconds to wait before failing. Default 300.
    pub timeout: Option<u64>,
    /// Seconds between checks. Default 1.
    pub interval: Option<u64>,
    /// Seconds to wait before the first check. Default 0.
    pub delay: Option<u64>,
}

pub const DOC: &str = r#"# wait_for

Waits until something is true **on the target**: a TCP port is open (or closed), a path exists
(or not), or a URL answers HTTP 200. It never changes anything (its status is `ok`), and it runs
in check mode too, as Ansible's does, since it only reads. When the time is up it fails with what
it waited for: `port 6443 on 10.77.0.11 not open after 30s`.

- Ports are checked from the target with `nc -z` when the target has it, else with bash's
  `/dev/tcp` (bash, not POSIX sh) under coreutils' `timeout`; a target with neither fails with a
  message saying so.
- `url` checks need `curl` on the target: `curl` GETs the URL and the status must be 200;
  `ca_cert` (a file on the target) verifies the server's certificate.
- `path` checks use only `test`.
- Each check is one short command (one round trip over SSH); between checks it sleeps `interval`
  seconds on the controller.

## Arguments

| name | type | |
|---|---|---|
| `port` | int | TCP port (one of `port`, `path`, `url`) |
| `host` | string | address for `port`, default 127.0.0.1 |
| `path` | string | path on the target |
| `url` | string | http(s) URL, status 200 expected |
| `ca_cert` | string | CA file on the target for `url` |
| `state` | string | port: started / stopped; path: present / absent |
| `timeout` | int | seconds, default 300 |
| `interval` | int | seconds between checks, default 1 |
| `delay` | int | seconds before the first check, default 0 |

## Result

`elapsed` (seconds, fractional) and `checks` (how many checks were made).

## Example

```rhai
on("masters", [
    wait_for(#{ port: 6443, host: "{{ ansible_host }}", timeout: 120 }),
    wait_for(#{ url: "https://127.0.0.1:6443/healthz", ca_cert: "/etc/kubernetes/pki/ca.crt" }),
    wait_for(#{ path: "/etc/kubernetes/admin.conf" }),
]);
```
"#;

/// What is waited for, and how it reads in messages.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Port {
        host: &'a str,
        port: u16,
        open: bool,
    },
    Path {
        path: &'a str,
        present: bool,
    },
    Url {
        url: &'a str,
        ca_cert: Option<&'a str>,
    },
}

impl Args {
    fn target(&self) -> Result<Target<'_>, String> {
        let given = [self.port.is_some(), self.path.is_some(), self.url.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("give exactly one of `port`, `path`, `url`".into());
        }
        let state = self.state.as_deref();
        if self.host.is_some() && self.port.is_none() {
            return Err("host: only used with `port`".into());
        }
        if self.ca_cert.is_some() && self.url.is_none() {
            return Err("ca_cert: only used with `url`".into());
        }
        if let Some(port) = self.port {
            let open = match state {
                None | Some("started") => true,
                Some("stopped") => false,
                Some(s) => return Err(format!("state: {s:?} for a port; use started or stopped")),
            };
            let host = self.host.as_deref().unwrap_or("127.0.0.1");
            if host.is_empty() {
                return Err("host: is empty".into());
            }
            return Ok(Target::Port { host, port, open });
        }
        if let Some(path) = self.path.as_deref() {
            let present = match state {
                None | Some("present") => true,
                Some("absent") => false,
                Some(s) => return Err(format!("state: {s:?} for a path; use present or absent")),
            };
            return Ok(Target::Path { path, present });
        }
        let url = self.url.as_deref().unwrap_or_default();
        if let Some(s) = state {
            return Err(format!("state: {s:?} is not used with `url`"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("url: {url:?} must start with http:// or https://"));
        }
        Ok(Target::Url {
            url,
            ca_cert: self.ca_cert.as_deref(),
        })
    }
}

/// Exit status of a check script: condition met.
const MET: i32 = 0;
/// The check cannot be made on this target (a tool is missing).
const CANNOT: i32 = 3;

impl Target<'_> {
    /// A script that exits 0 when the condition holds, 1 when not, 3 when it cannot check; a url
    /// check prints the status it got.
    fn script(&self) -> Result<String, String> {
        Ok(match self {
            Target::Port { host, port, open } => {
                let probe = format!(
                    "h={}; p={port}\n\
                     if command -v nc >/dev/null 2>&1; then timeout 5 nc -z -w 3 \"$h\" \"$p\" >/dev/null 2>&1\n\
                     elif command -v bash >/dev/null 2>&1; then \
                     timeout 3 bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$h\" \"$p\" >/dev/null 2>&1\n\
                     else echo 'wait_for: checking a port needs nc or bash on the target' >&2; exit {CANNOT}; fi\n",
                    quote(host)?
                );
                let (yes, no) = if *open { (0, 1) } else { (1, 0) };
                format!("{probe}if [ $? -eq 0 ]; then exit {yes}; else exit {no}; fi\n")
            }
            Target::Path { path, present } => {
                let test = format!("[ -e {q} ] || [ -L {q} ]", q = quote(path)?);
                if *present {
                    format!("{test}\n")
                } else {
                    format!("! {{ {test}; }}\n")
                }
            }
            Target::Url { url, ca_cert } => {
                let ca = match ca_cert {
                    Some(c) => format!("--cacert {} ", quote(c)?),
                    None => String::new(),
                };
                format!(
                    "command -v curl >/dev/null 2>&1 || {{ echo 'wait_for: url checks need curl on the target' >&2; exit {CANNOT}; }}\n\
                     c=$(curl -sS -o /dev/null -w '\\n%{{http_code}}' --max-time 10 {ca}{} 2>&1) || true\n\
                     printf '%s\\n' \"$c\"\n[ \"$(printf '%s\\n' \"$c\" | tail -n 1)\" = 200 ]\n",
                    quote(url)?
                )
            }
        })
    }

    /// Why the wait failed, given what the last check printed.
    fn not_after(&self, secs: u64, last: &str) -> String {
        match self {
            Target::Port { host, port, open } => format!(
                "port {port} on {host} {} after {secs}s",
                if *open { "not open" } else { "still open" }
            ),
            Target::Path { path, present } => format!(
                "{path} {} after {secs}s",
                if *present {
                    "not present"
                } else {
                    "still present"
                }
            ),
            Target::Url { url, .. } => {
                let last = last.trim();
                let last = match last.lines().last() {
                    Some("000") | None => {
                        let first = last.lines().find(|l| !l.trim().is_empty());
                        first
                            .filter(|l| *l != "000")
                            .unwrap_or("no answer")
                            .to_string()
                    }
                    Some(code) => format!("status {code}"),
                };
                format!("{url} did not answer 200 after {secs}s (last: {last})")
            }
        }
    }
}

#[async_trait]
impl Module for WaitFor {
    const NAME: &'static str = "wait_for";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = NoChange;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.interval == Some(0) {
            return Err("interval: must be at least 1".into());
        }
        args.target().map(|_| ())
    }

    async fn probe(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<NoChange>, ModuleError> {
        let target = args.target().map_err(ModuleError::Args)?;
        let script = target.script().map_err(ModuleError::Args)?;
        let timeout = Duration::from_secs(args.timeout.unwrap_or(300));
        let interval = Duration::from_secs(args.interval.unwrap_or(1));
        let start = Instant::now();
        if let Some(d) = args.delay {
            tokio::time::sleep(Duration::from_secs(d)).await;
        }
        let mut checks = 0u64;
        loop {
            let out = cx.host.run(&script).await?;
            checks += 1;
            match out.status {
                MET => {
                    let elapsed = start.elapsed().as_secs_f64();
                    return Ok(Probe::Unchanged(
                        json!({ "elapsed": elapsed, "checks": checks }),
                    ));
                }
                CANNOT => return Err(ModuleError::Failed(out.stderr_text().trim().to_string())),
                _ => {}
            }
            let waited = start.elapsed();
            if waited >= timeout {
                let last = out.stdout_text();
                return Err(ModuleError::Failed(
                    target.not_after(timeout.as_secs(), &last),
                ));
            }
            tokio::time::sleep(interval.min(timeout - waited)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::Status;
    use serde_json::json;

    fn args(v: serde_json::Value) -> Args {
        engine::module::parse_args(&v).unwrap()
    }

    #[test]
    fn targets_and_messages() {
        let a = args(json!({ "port": 6443, "host": "10.77.0.11" }));
        let t = a.target().unwrap();
        assert_eq!(
            t,
            Target::Port {
                host: "10.77.0.11",
                port: 6443,
                open: true
            }
        );
        assert_eq!(
            t.not_after(30, ""),
            "port 6443 on 10.77.0.11 not open after 30s"
        );
        let a = args(json!({ "port": 22, "state": "stopped" }));
        assert_eq!(
            a.target().unwrap().not_after(5, ""),
            "port 22 on 127.0.0.1 still open after 5s"
        );
        let a = args(json!({ "url": "https://x/healthz" }));
        let t = a.target().unwrap();
        assert_eq!(
            t.not_after(9, "503\n"),
            "https://x/healthz did not answer 200 after 9s (last: status 503)"
        );
        assert_eq!(
            t.not_after(9, "curl: (7) Failed to connect\n000\n"),
            "https://x/healthz did not answer 200 after 9s (last: curl: (7) Failed to connect)"
        );
        for bad in [
            json!({ "port": 1, "path": "/x" }),
            json!({}),
            json!({ "path": "/x", "state": "started" }),
            json!({ "port": 1, "state": "present" }),
            json!({ "path": "/x", "host": "h" }),
            json!({ "url": "ftp://x" }),
            json!({ "port": 1, "ca_cert": "/c" }),
        ] {
            assert!(args(bad.clone()).target().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn waits_for_paths_and_ports_on_the_local_host() {
        let env = Env::new();
        let p = env.path("flag");
        let out = env
            .run(
                &WaitFor,
                json!({ "path": p, "state": "absent", "timeout": 1 }),
                true,
            )
            .await;
        assert_eq!(out.unwrap().status, Status::Ok);
        let writer = {
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                std::fs::write(p, "x").unwrap();
            })
        };
        let out = env
            .apply(&WaitFor, json!({ "path": p, "timeout": 10 }))
            .await;
        assert_eq!(out.status, Status::Ok);
        assert!(
            out.result["checks"].as_u64().unwrap() >= 2,
            "{}",
            out.result
        );
        writer.await.unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let out = env
            .apply(&WaitFor, json!({ "port": port, "timeout": 5 }))
            .await;
        assert_eq!(out.status, Status::Ok);
        drop(listener);
        let out = env
            .apply(
                &WaitFor,
                json!({ "port": port, "state": "stopped", "timeout": 5 }),
            )
            .await;
        assert_eq!(out.status, Status::Ok);
        let started = Instant::now();
        let err = env
            .error(&WaitFor, json!({ "port": port, "timeout": 2 }))
            .await;
        assert_eq!(err, format!("port {port} on 127.0.0.1 not open after 2s"));
        assert!(started.elapsed() < Duration::from_secs(6));
    }
}
