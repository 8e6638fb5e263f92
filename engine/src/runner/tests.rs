//! The scheduler against a transport that records every script it is sent (and runs it with the
//! local sh, so probes and batches read real output): order, phases, handlers, read-ahead and
//! check mode, with no module crate and no host.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{run, RunOptions};
use crate::error::ErrorKind;
use crate::events::Collector;
use crate::inventory::{HostEntry, Inventory};
use crate::module::{Applied, Module, ModuleContext, ModuleError, Probe, Registry};
use crate::plan::Plan;
use crate::script::{plan, PlanInput};
use crate::transport::{Connector, ExecOutput, Keep, LocalTransport, Transport, TransportError};

type Log = Arc<Mutex<Vec<(String, String)>>>;

struct Recording {
    host: String,
    log: Log,
}

/// The script as the task made it: the mark every command carries (to be stopped on Ctrl-C)
/// differs from run to run.
fn without_command_marks(script: &str) -> String {
    let mut out = script.to_string();
    while let Some(start) = out.find("export PLAYBOOK_COMMAND=") {
        let end = out[start..].find('\n').map_or(out.len(), |n| start + n + 1);
        out.replace_range(start..end, "");
    }
    out
}

#[async_trait]
impl Transport for Recording {
    async fn exec_kept(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        self.log
            .lock()
            .unwrap()
            .push((self.host.clone(), without_command_marks(script)));
        LocalTransport.exec_kept(script, stdin, keep).await
    }

    async fn close(&self) {}
}

#[derive(Default)]
struct Fake {
    log: Log,
    connects: Mutex<Vec<String>>,
    /// Hosts that cannot be reached.
    down: Vec<String>,
}

#[async_trait]
impl Connector for Fake {
    async fn connect(&self, host: &HostEntry) -> Result<Arc<dyn Transport>, TransportError> {
        self.connects.lock().unwrap().push(host.name.clone());
        if self.down.contains(&host.name) {
            return Err(TransportError::Unreachable(format!(
                "{} is down",
                host.name
            )));
        }
        Ok(Arc::new(Recording {
            host: host.name.clone(),
            log: self.log.clone(),
        }))
    }
}

impl Fake {
    /// The scripts one host was sent, in order.
    fn scripts(&self, host: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(h, _)| h == host)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// A module made of one probe script and one apply script: the probe prints `present` when
/// the marker `name` is already there; the apply prints what it would have created.
struct Mark;

#[derive(Deserialize)]
struct MarkArgs {
    name: String,
    present: bool,
}

#[async_trait]
impl Module for Mark {
    const NAME: &'static str = "mark";
    const DOC: &'static str = "test module";
    type Args = MarkArgs;
    type Plan = String;
    const SCRIPT_PROBE: bool = true;
    const SCRIPT_APPLY: bool = true;

    fn probe_script(
        &self,
        args: &MarkArgs,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let said = if args.present { "present" } else { "absent" };
        Ok(Some(format!("echo probe-{} {said}", args.name)))
    }

    async fn decide(
        &self,
        args: &MarkArgs,
        out: Option<ExecOutput>,
        _cx: &ModuleContext<'_>,
    ) -> Result<Probe<String>, ModuleError> {
        let out = out.expect("a probe script ran").stdout_text();
        Ok(if out.contains("present") {
            Probe::Unchanged(Value::Null)
        } else {
            Probe::change(args.name.clone(), format!("create {}", args.name), None)
        })
    }

    fn apply_script(
        &self,
        _args: &MarkArgs,
        plan: &String,
        _cx: &ModuleContext<'_>,
    ) -> Result<crate::host::Script, ModuleError> {
        Ok(crate::host::Script {
            text: format!("echo apply-{plan}"),
            ..Default::default()
        })
    }

    async fn applied(
        &self,
        _args: &MarkArgs,
        _plan: String,
        _out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        Ok(Applied::changed(Value::Null))
    }
}

const INVENTORY: &str = r#"
[hosts.a]
connection = "local"

[hosts.b]
connection = "local"
"#;

struct Run {
    fake: Arc<Fake>,
    recap: super::Recap,
    events: Arc<Collector>,
}

impl Run {
    /// Status and message of each task's end on a host, in order.
    fn ends(&self, host: &str) -> Vec<(String, String)> {
        let events = self.events.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                crate::events::Event::TaskEnd(end) if end.host == host => Some((
                    format!("{:?}", end.status),
                    end.msg.clone().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect()
    }
}

async fn run_playbook(playbook: &str, check: bool) -> Run {
    run_with_inventory(playbook, INVENTORY, check).await
}

async fn run_with_inventory(playbook: &str, inventory: &str, check: bool) -> Run {
    run_on(playbook, inventory, check, Fake::default()).await
}

async fn run_on(playbook: &str, inventory: &str, check: bool, fake: Fake) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("play.rhai");
    std::fs::write(&file, playbook).unwrap();
    let opts = RunOptions {
        check,
        ..RunOptions::default()
    };
    run_file(&file, inventory, opts, fake).await
}

/// Runs the playbook `file` with `opts`.
async fn run_file(file: &std::path::Path, inventory: &str, opts: RunOptions, fake: Fake) -> Run {
    let inventory = Arc::new(Inventory::parse(inventory, "inventory.toml").unwrap());
    let mut registry = Registry::new();
    registry.register(Mark);
    let sink = Arc::new(Collector::default());
    let plan: Plan = plan(PlanInput {
        playbook: file,
        inventory: inventory.clone(),
        registry: &registry,
        limit: None,
        extra_vars: Default::default(),
        sink: sink.clone(),
        secret_vars: Default::default(),
        secrets: Default::default(),
    })
    .unwrap();
    let fake = Arc::new(fake);
    let recap = run(Arc::new(plan), inventory, fake.clone(), opts, sink.clone()).await;
    Run {
        fake,
        recap,
        events: sink,
    }
}

/// The scripts custom tasks ran (`echo NAME`), in the order a host was sent them.
fn echoes(scripts: &[String]) -> Vec<String> {
    scripts
        .iter()
        .filter_map(|s| s.strip_prefix("echo "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn tasks_run_in_order_phase_by_phase_with_one_connection_per_host() {
    let r = run_playbook(
        r#"
        phase("one", || {
            on("all", [
                task("first", |h| { h.run("echo first"); "ok" }),
                task("second", |h| { h.run("echo second"); "changed" }),
            ]);
        });
        phase("two", || {
            on("b", task("third", |h| { h.run("echo third"); "ok" }));
        });
        "#,
        false,
    )
    .await;
    assert_eq!(echoes(&r.fake.scripts("a")), ["first", "second"]);
    assert_eq!(echoes(&r.fake.scripts("b")), ["first", "second", "third"]);
    // Phase two starts only when phase one has ended on every host.
    let log = r.fake.log.lock().unwrap();
    let third = log.iter().position(|(_, s)| s == "echo third").unwrap();
    assert!(
        log[..third]
            .iter()
            .filter(|(_, s)| s == "echo second")
            .count()
            == 2
    );
    drop(log);
    let mut connects = r.fake.connects.lock().unwrap().clone();
    connects.sort();
    assert_eq!(connects, ["a", "b"]);
    let counts: BTreeMap<_, _> = r
        .recap
        .hosts
        .iter()
        .map(|(h, c)| (h.as_str(), (c.ok, c.changed)))
        .collect();
    assert_eq!(counts, BTreeMap::from([("a", (1, 1)), ("b", (2, 1))]));
}

#[tokio::test]
async fn handlers_run_once_at_the_end_of_the_phase_on_notified_hosts() {
    let r = run_playbook(
        r#"
        phase("one", || {
            on("a", task("notifies", |h| { h.run("echo notifies"); "changed" }).notify("h"));
            on("b", task("quiet", |h| { h.run("echo quiet"); "ok" }).notify("h"));
            on("all", task("after", |h| { h.run("echo after"); "changed" }).notify("h"));
            handler("h", task("handler", |h| { h.run("echo handler"); "ok" }));
        });
        "#,
        false,
    )
    .await;
    assert_eq!(
        echoes(&r.fake.scripts("a")),
        ["notifies", "after", "handler"]
    );
    assert_eq!(echoes(&r.fake.scripts("b")), ["quiet", "after", "handler"]);
}

#[tokio::test]
async fn unchanged_probes_are_read_ahead_in_one_round_trip() {
    let r = run_playbook(
        r#"
        on("a", [
            mark(#{ name: "x", present: true }),
            mark(#{ name: "y", present: true }),
            mark(#{ name: "z", present: true }),
        ]);
        "#,
        false,
    )
    .await;
    let scripts = r.fake.scripts("a");
    assert_eq!(scripts.len(), 1, "one batch: {scripts:?}");
    for name in ["x", "y", "z"] {
        assert!(scripts[0].contains(&format!("echo probe-{name} present")));
    }
    assert_eq!(r.recap.hosts["a"].round_trips, 1);
    assert_eq!(r.recap.hosts["a"].ok, 3);
}

#[tokio::test]
async fn a_change_carries_the_next_probes_in_its_round_trip() {
    let r = run_playbook(
        r#"
        on("a", [
            mark(#{ name: "x", present: false }),
            mark(#{ name: "y", present: true }),
        ]);
        "#,
        false,
    )
    .await;
    let scripts = r.fake.scripts("a");
    // The batch reads both probes; x's apply then takes y's probe along, read after it.
    assert_eq!(scripts.len(), 2, "{scripts:?}");
    let apply = &scripts[1];
    let (before, after) = apply.split_at(apply.find("echo apply-x").expect("x applied"));
    assert!(!before.contains("probe-y"));
    assert!(after.contains("echo probe-y present"));
    assert_eq!(r.recap.hosts["a"].changed, 1);
    assert_eq!(r.recap.hosts["a"].ok, 1);
}

#[tokio::test]
async fn check_mode_probes_and_never_applies() {
    let r = run_playbook(
        r#"
        on("all", [
            mark(#{ name: "x", present: false }),
            mark(#{ name: "y", present: false }),
        ]);
        "#,
        true,
    )
    .await;
    for host in ["a", "b"] {
        let scripts = r.fake.scripts(host);
        assert!(scripts.iter().all(|s| !s.contains("apply-")), "{scripts:?}");
        assert_eq!(r.recap.hosts[host].changed, 2);
    }
}

#[tokio::test]
async fn a_closure_reading_a_predicted_result_depends_on_a_change_above() {
    let r = run_playbook(
        r#"
        fn read(t) { t.changed }
        let x = on("a", mark(#{ name: "x", present: false }));
        on("a", task("direct", |h| { h.run("echo " + x.changed); "ok" }));
        on("a", task("through a function", |h| { h.run("echo " + read(x)); "ok" }));
        on("a", task("in a condition", |h| { h.run("echo cond"); "ok" }).when(|h| x.changed));
        "#,
        true,
    )
    .await;
    let ends = r.ends("a");
    assert_eq!(ends.len(), 4, "{ends:?}");
    for (status, msg) in &ends[1..] {
        assert_eq!(status, "Skipped", "{ends:?}");
        assert!(msg.starts_with("depends on a change above: "), "{msg}");
        assert!(!msg.contains('\u{1}') && !msg.contains("(line "), "{msg}");
    }
    let scripts = r.fake.scripts("a");
    assert!(
        scripts
            .iter()
            .all(|s| !s.contains("echo cond") && !s.contains("echo true")),
        "{scripts:?}"
    );
}

/// Retry events of a host: (attempt, attempts, msg).
fn retries_of(r: &Run, host: &str) -> Vec<(u32, u32, String)> {
    let events = r.events.events.lock().unwrap();
    events
        .iter()
        .filter_map(|e| match e {
            crate::events::Event::TaskRetry {
                host: h,
                attempt,
                attempts,
                msg,
                ..
            } if h == host => Some((*attempt, *attempts, msg.clone())),
            _ => None,
        })
        .collect()
}

/// A custom task counting its runs in a file of the temp dir: its result is `#{ n }`.
fn counter(file: &str) -> String {
    format!(
        r#"task("count", |h| {{
            let r = h.run("n=$(cat {file} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {file}; echo $n");
            #{{ result: #{{ n: parse_int(r.stdout) }} }}
        }})"#
    )
}

#[tokio::test]
async fn a_task_is_retried_until_its_condition_holds_over_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("n");
    let g = dir.path().join("m");
    let r = run_playbook(
        &format!(
            r#"
            on("a", {}.retry_until("result.n >= 3").retries(5).delay(0));
            on("a", {}.register("out").retry_until(|r| r.n >= 2).delay(0));
            "#,
            counter(f.to_str().unwrap()),
            counter(g.to_str().unwrap()),
        ),
        false,
    )
    .await;
    assert_eq!(
        r.ends("a"),
        [("Ok".into(), String::new()), ("Ok".into(), String::new())]
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "3");
    assert_eq!(std::fs::read_to_string(&g).unwrap().trim(), "2");
    let retries = retries_of(&r, "a");
    assert_eq!(
        retries,
        [
            (1, 6, "until condition is false: result.n >= 3".into()),
            (2, 6, "until condition is false: result.n >= 3".into()),
            // `until` alone: Ansible's 3 retries.
            (1, 4, "until condition is false".into()),
        ]
    );
}

#[tokio::test]
async fn a_task_whose_condition_never_holds_fails_after_its_retries() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("n");
    let r = run_playbook(
        &format!(
            r#"on("a", {}.register("c").retry_until("c.n > 10").retries(2).delay(0));"#,
            counter(f.to_str().unwrap())
        ),
        false,
    )
    .await;
    let ends = r.ends("a");
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].0, "Failed");
    assert_eq!(
        ends[0].1,
        "'count' on a gave up after 3 attempts: until condition is false: c.n > 10"
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "3");
    assert_eq!(retries_of(&r, "a").len(), 2);
}

#[tokio::test]
async fn retries_without_until_retry_a_failure_and_check_mode_tries_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("n");
    let flaky = format!(
        r#"task("flaky", |h| {{
            let r = h.run("n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo $n");
            if parse_int(r.stdout) < 2 {{ throw "not yet"; }}
            "ok"
        }}).retries(3).delay(0)"#,
        f.to_str().unwrap()
    );
    let r = run_playbook(&format!(r#"on("a", {flaky});"#), false).await;
    assert_eq!(r.ends("a")[0].0, "Ok");
    let retries = retries_of(&r, "a");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].2.contains("not yet"), "{retries:?}");
    std::fs::remove_file(&f).unwrap();
    let r = run_playbook(&format!(r#"on("a", {flaky});"#), true).await;
    assert_eq!(r.ends("a")[0].0, "Failed");
    assert!(retries_of(&r, "a").is_empty());
    assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "1");
}

#[tokio::test]
async fn a_run_once_task_runs_on_the_first_host_and_its_result_is_everyones() {
    let r = run_playbook(
        r#"
        on("all", task("once", |h| { h.run("echo once-" + h.name); #{ result: #{ by: h.name } } })
            .run_once().register("o"));
        on("all", task("read", |h| { h.run("echo read-" + h.vars.o.by); "ok" }));
        "#,
        false,
    )
    .await;
    assert_eq!(echoes(&r.fake.scripts("a")), ["once-a", "read-a"]);
    assert_eq!(echoes(&r.fake.scripts("b")), ["read-a"]);
    assert_eq!(
        r.ends("b").len(),
        1,
        "only the first host reports the run_once task"
    );
}

#[tokio::test]
async fn environment_and_become_wrap_the_task_scripts_only() {
    let r = run_playbook(
        r#"
        on("a", [
            mark(#{ name: "x", present: true }).environment(#{ GREETING: "it's me", N: 3 }),
            mark(#{ name: "y", present: true }).become(true).become_user("deploy"),
            mark(#{ name: "z", present: true }),
        ]);
        "#,
        false,
    )
    .await;
    let scripts = r.fake.scripts("a");
    let x = scripts.iter().find(|s| s.contains("probe-x")).unwrap();
    assert!(
        x.starts_with("export GREETING=\"it's me\"\nexport N=3\n"),
        "{x}"
    );
    let y = scripts.iter().find(|s| s.contains("probe-y")).unwrap();
    assert!(y.starts_with("sudo -n -H -u deploy -- /bin/sh -c "), "{y}");
    let z = scripts.iter().find(|s| s.contains("probe-z")).unwrap();
    assert!(!z.contains("sudo") && !z.contains("export"), "{z}");
}

#[tokio::test]
async fn a_task_past_its_timeout_fails_and_its_process_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("late");
    let started = std::time::Instant::now();
    let r = run_playbook(
        &format!(
            r#"on("a", task("slow", |h| {{ h.run("sleep 3; touch {}"); "ok" }}).timeout(1));"#,
            f.to_str().unwrap()
        ),
        false,
    )
    .await;
    let ends = r.ends("a");
    assert_eq!(ends[0].0, "Failed");
    assert!(ends[0].1.contains("timed out after 1 s"), "{ends:?}");
    assert!(started.elapsed() < std::time::Duration::from_millis(2900));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(!f.exists(), "the command was stopped, not left to finish");
}

#[tokio::test]
async fn become_false_turns_the_inventorys_sudo_off_for_one_task() {
    let r = run_with_inventory(
        r#"
        on("a", [
            mark(#{ name: "x", present: true }).become(false),
            mark(#{ name: "y", present: true }),
            mark(#{ name: "z", present: true }).become_user("deploy"),
        ]);
        "#,
        "[hosts.a]\nconnection = \"local\"\nbecome = true\nbecome_user = \"app\"\n",
        false,
    )
    .await;
    let scripts = r.fake.scripts("a");
    let probe = |n: &str| {
        scripts
            .iter()
            .find(|s| s.contains(&format!("probe-{n}")))
            .unwrap()
            .clone()
    };
    assert!(probe("x").starts_with("echo probe-x"), "{scripts:?}");
    assert!(
        probe("y").starts_with("sudo -n -H -u app -- "),
        "{scripts:?}"
    );
    assert!(
        probe("z").starts_with("sudo -n -H -u deploy -- "),
        "{scripts:?}"
    );
}

#[tokio::test]
async fn a_delegated_task_runs_through_the_other_hosts_connection_for_its_own_host() {
    let r = run_playbook(
        r#"
        on("a", [
            mark(#{ name: "x", present: true }).delegate_to("b"),
            task("who", |h| { h.run("echo for-" + h.name); #{ result: #{ me: h.name } } })
                .delegate_to("b").register("who"),
            task("read", |h| { h.run("echo read-" + h.vars.who.me); "ok" }),
        ]);
        "#,
        false,
    )
    .await;
    let on_b = r.fake.scripts("b");
    assert!(on_b.iter().any(|s| s.contains("probe-x")), "{on_b:?}");
    assert_eq!(echoes(&on_b), ["probe-x present", "for-a"]);
    assert_eq!(echoes(&r.fake.scripts("a")), ["read-a"]);
    assert!(r.fake.scripts("a").iter().all(|s| !s.contains("probe-x")));
    assert_eq!(r.ends("a").len(), 3);
    assert!(r.ends("b").is_empty());
    assert!(!r.recap.hosts.contains_key("b"), "b ran no task of its own");
}

#[tokio::test]
async fn a_run_once_handler_runs_on_its_first_notified_host() {
    let r = run_playbook(
        r#"
        on("b", task("notifies", |h| { h.run("echo notifies"); "changed" }).notify("h"));
        handler("h", task("handler", |h| { h.run("echo handler-" + h.name); "ok" }).run_once());
        "#,
        false,
    )
    .await;
    assert_eq!(echoes(&r.fake.scripts("b")), ["notifies", "handler-b"]);
    assert!(r.fake.scripts("a").is_empty());
}

/// Hosts a to f, all local.
fn six_hosts() -> String {
    ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|h| format!("[hosts.{h}]\nconnection = \"local\"\n\n"))
        .collect()
}

impl Run {
    /// Each batch a rolling phase started: its number and hosts.
    fn batches(&self) -> Vec<(usize, Vec<String>)> {
        let events = self.events.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                crate::events::Event::BatchStart { batch, hosts, .. } => {
                    Some((*batch, hosts.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The hosts in the order they were first sent a script.
    fn first_contacts(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (h, _) in self.fake.log.lock().unwrap().iter() {
            if !seen.contains(h) {
                seen.push(h.clone());
            }
        }
        seen
    }
}

#[tokio::test]
async fn a_rolling_phase_runs_batch_by_batch_and_stops_after_a_failed_batch() {
    let r = run_with_inventory(
        r#"
        phase("upgrade", || {
            serial(2);
            max_fail_percentage(0);
            on("all", [
                task("step", |h| { h.run("echo step-" + h.name); "changed" }).notify("restart"),
                task("check", |h| { h.run("echo check-" + h.name); if h.name == "d" { throw "d is broken" } "ok" }),
            ]);
            handler("restart", task("restart", |h| { h.run("echo restart-" + h.name); "ok" }));
        });
        phase("after", || {
            on("all", task("later", |h| { h.run("echo later-" + h.name); "ok" }));
        });
        "#,
        &six_hosts(),
        false,
    )
    .await;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        r.batches(),
        [(1, names(&["a", "b"])), (2, names(&["c", "d"]))],
        "batch 3 never starts"
    );
    // Batch 1 ran its whole phase and its handlers before batch 2 started.
    assert_eq!(
        echoes(&r.fake.scripts("a")),
        ["step-a", "check-a", "restart-a"]
    );
    let log: Vec<String> = r
        .fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    let restart_b = log.iter().position(|s| s == "echo restart-b").unwrap();
    let step_c = log.iter().position(|s| s == "echo step-c").unwrap();
    assert!(restart_b < step_c, "{log:?}");
    // The batch's other host finished the phase and its handlers ran; the failed host's did not.
    assert_eq!(
        echoes(&r.fake.scripts("c")),
        ["step-c", "check-c", "restart-c"]
    );
    assert_eq!(echoes(&r.fake.scripts("d")), ["step-d", "check-d"]);
    assert!(r.fake.scripts("e").is_empty() && r.fake.scripts("f").is_empty());
    assert!(
        !log.iter().any(|s| s.starts_with("echo later")),
        "no later phase"
    );
    assert_eq!(r.recap.not_reached, ["e", "f"]);
    let stopped = r.recap.stopped.clone().unwrap();
    assert_eq!(
        stopped,
        "phase 'upgrade' stopped after batch 2 of 3: 1 of 2 host(s) of the batch failed (d), \
         more than max_fail_percentage(0) allows; phases not run: after"
    );
    assert_eq!(r.recap.exit_code(), 2);
}

#[tokio::test]
async fn a_rolling_phase_goes_on_past_a_failure_unless_the_whole_batch_fails() {
    let playbook = |fails: &str| {
        format!(
            r#"
            phase("upgrade", || {{
                serial([1, "50%"]);
                on("all", task("step", |h| {{ h.run("echo step-" + h.name); if {fails} {{ throw "no" }} "ok" }}));
            }});
            "#
        )
    };
    let inventory = six_hosts();
    let four: String = inventory.split("[hosts.e]").next().unwrap().to_string();
    // 50% of four hosts: batches of 1, 2, 2 (the last size repeats). One failure in a batch of
    // two leaves the rollout going, as in Ansible without max_fail_percentage.
    let r = run_with_inventory(&playbook("h.name == \"b\""), &four, false).await;
    let sizes: Vec<usize> = r.batches().iter().map(|(_, h)| h.len()).collect();
    assert_eq!(sizes, [1, 2, 1]);
    assert_eq!(r.first_contacts(), ["a", "b", "c", "d"].map(String::from));
    assert!(r.recap.not_reached.is_empty() && r.recap.stopped.is_none());
    assert_eq!(r.recap.exit_code(), 2);
    // Every host of batch 2 failing stops it.
    let r = run_with_inventory(&playbook("h.name != \"a\""), &four, false).await;
    assert_eq!(r.recap.not_reached, ["d"]);
    assert!(r.fake.scripts("d").is_empty());
    assert!(r
        .recap
        .stopped
        .unwrap()
        .contains("every host of the batch failed (b, c)"));
}

#[tokio::test]
async fn any_errors_fatal_stops_every_host_at_the_first_failure_without_handlers() {
    let r = run_with_inventory(
        r#"
        phase("one", || {
            any_errors_fatal();
            on("all", task("first", |h| {
                if h.name == "a" { throw "broken" }
                h.run("echo first-" + h.name + "; sleep 0.3"); "changed"
            }).notify("h"));
            on("all", task("second", |h| { h.run("echo second-" + h.name); "ok" }));
            handler("h", task("handler", |h| { h.run("echo handler-" + h.name); "ok" }));
        });
        phase("two", || { on("all", task("later", |h| { h.run("echo later"); "ok" })); });
        "#,
        INVENTORY,
        false,
    )
    .await;
    // b's task in flight ends; nothing starts after it.
    let ran: Vec<String> = r
        .fake
        .scripts("b")
        .into_iter()
        .filter(|s| s.contains("echo"))
        .collect();
    assert_eq!(ran.last().unwrap(), "echo first-b; sleep 0.3");
    assert!(!ran
        .iter()
        .any(|s| s.contains("second") || s.contains("handler")));
    let skipped = r.ends("b");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[1].0, "Skipped");
    assert!(
        skipped[1]
            .1
            .contains("a failed 'first' (line 4) and the phase has any_errors_fatal"),
        "{skipped:?}"
    );
    assert!(r.recap.stopped.unwrap().contains("phases not run: two"));
}

#[tokio::test]
async fn a_task_reading_results_in_a_rolling_phase_waits_only_for_its_batch_and_run_once_runs_per_batch(
) {
    let inventory = six_hosts();
    let run = run_with_inventory(
        r#"
        phase("one", || {
            serial(2);
            let made = on("all", task("make", |h| #{ result: #{ by: h.name } }));
            let once = on("all", task("once", |h| { h.run("echo once-" + h.name); #{ result: #{ by: h.name } } }).run_once());
            on("all", task("read", |h| { h.run("echo read-" + made.by + "-" + once.by); "ok" }));
        });
        "#,
        &inventory,
        false,
    );
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("a batch does not wait for the hosts of later batches");
    assert_eq!(echoes(&r.fake.scripts("a")), ["once-a", "read-a-a"]);
    assert_eq!(echoes(&r.fake.scripts("b")), ["read-b-a"]);
    assert_eq!(echoes(&r.fake.scripts("c")), ["once-c", "read-c-c"]);
    assert_eq!(echoes(&r.fake.scripts("f")), ["read-f-e"]);
}

#[tokio::test]
async fn check_mode_rolls_through_the_batches_too() {
    let r = run_with_inventory(
        r#"
        phase("one", || {
            serial("50%");
            on("all", mark(#{ name: "x", present: false }));
        });
        "#,
        INVENTORY,
        true,
    )
    .await;
    assert_eq!(r.batches().len(), 2);
    assert!(r.fake.scripts("a").iter().all(|s| !s.contains("apply")));
    assert_eq!(r.recap.changed(), 2);
}

#[tokio::test]
async fn an_unreachable_host_goes_on_past_a_task_that_ignores_it() {
    let fake = Fake {
        down: vec!["b".into()],
        ..Fake::default()
    };
    let r = run_on(
        r#"
        on("all", mark(#{ name: "x", present: true }).ignore_unreachable());
        on("all", mark(#{ name: "y", present: true }));
        on("all", mark(#{ name: "z", present: true }));
        "#,
        INVENTORY,
        false,
        fake,
    )
    .await;
    let ends = r.ends("b");
    let statuses: Vec<&str> = ends.iter().map(|(s, _)| s.as_str()).collect();
    // Ignored once, the host goes on; the next task finds it unreachable for real, and stops it.
    assert_eq!(statuses, ["Unreachable", "Unreachable"], "{ends:?}");
    let b = &r.recap.hosts["b"];
    assert_eq!((b.ignored, b.unreachable, b.ok), (1, 1, 0));
    assert_eq!(r.recap.hosts["a"].ok, 3);
    assert_eq!(r.recap.exit_code(), 3);
}

#[tokio::test]
async fn a_block_rescues_a_failure_and_runs_always_in_both_cases() {
    let r = run_playbook(
        r#"
        on("all", block([
            task("body", |h| { h.run("echo body-" + h.name); if h.name == "b" { throw "no" } "ok" }),
            task("rest", |h| { h.run("echo rest-" + h.name); "ok" }),
        ]).rescue([
            task("rescue", |h| { h.run("echo rescue-" + h.name); "changed" }),
        ]).always([
            task("always", |h| { h.run("echo always-" + h.name); "ok" }),
        ]));
        on("all", task("next", |h| { h.run("echo next-" + h.name); "ok" }));
        "#,
        false,
    )
    .await;
    let ran = |h: &str| -> Vec<String> {
        echoes(&r.fake.scripts(h))
            .into_iter()
            .filter(|s| !s.starts_with('"'))
            .collect()
    };
    assert_eq!(ran("a"), ["body-a", "rest-a", "always-a", "next-a"]);
    assert_eq!(ran("b"), ["body-b", "rescue-b", "always-b", "next-b"]);
    assert_eq!(r.recap.hosts["b"].rescued, 1);
    assert_eq!(r.recap.hosts["b"].failed, 0);
    assert_eq!(r.recap.exit_code(), 0);
}

#[tokio::test]
async fn flush_handlers_runs_the_handlers_notified_so_far_before_the_next_tasks() {
    let r = run_playbook(
        r#"
        phase("one", || {
            on("all", task("install", |h| { h.run("echo install"); "changed" }).notify("restart"));
            flush_handlers();
            on("all", task("use", |h| { h.run("echo use"); "changed" }).notify("restart"));
            handler("restart", task("restart", |h| { h.run("echo restart"); "ok" }));
        });
        "#,
        false,
    )
    .await;
    for h in ["a", "b"] {
        assert_eq!(
            echoes(&r.fake.scripts(h)),
            ["install", "restart", "use", "restart"]
        );
    }
    // Every host's part before the flush ends before any host's handler runs.
    let log = r.fake.log.lock().unwrap();
    let first_restart = log.iter().position(|(_, s)| s == "echo restart").unwrap();
    assert_eq!(
        log[..first_restart]
            .iter()
            .filter(|(_, s)| s == "echo install")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_rolling_phase_runs_a_hosts_handlers_with_its_own_batch() {
    // b owes the handler from an earlier run: it runs after b's batch, not a's.
    let dir = tempfile::tempdir().unwrap();
    let play = dir.path().join("play.rhai");
    std::fs::write(
        &play,
        r#"
        phase("one", || {
            serial(1);
            on("all", task("step", |h| { h.run("echo step-" + h.name); "ok" }).notify("h"));
            handler("h", task("handler", |h| { h.run("echo handler-" + h.name); "ok" }));
        });
        "#,
    )
    .unwrap();
    let store = crate::pending::PendingHandlers::beside(&dir.path().join("inv.toml"), &play);
    let owed = crate::pending::Pending {
        phase: "one".into(),
        handler: "h".into(),
    };
    store
        .save(crate::pending::ByHost::from([("b".into(), vec![owed])]))
        .unwrap();
    let opts = RunOptions {
        pending_handlers: Some(store.clone()),
        ..RunOptions::default()
    };
    let r = run_file(&play, INVENTORY, opts, Fake::default()).await;
    let log: Vec<String> = r
        .fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    let steps: Vec<&String> = log.iter().filter(|s| s.starts_with("echo ")).collect();
    assert_eq!(steps, ["echo step-a", "echo step-b", "echo handler-b"]);
    assert!(store.load().unwrap().is_empty(), "the debt is paid");
}

#[tokio::test]
async fn an_unrescued_block_failure_under_any_errors_fatal_stops_the_other_hosts() {
    let r = run_playbook(
        r#"
        phase("one", || {
            any_errors_fatal();
            on("a", block([task("fails", |h| { throw "no" })])
                .always([task("cleanup", |h| { h.run("echo cleanup"); "ok" })]));
            on("b", task("slow", |h| { h.run("sleep 0.5"); "ok" }));
            on("b", task("next", |h| { h.run("echo next"); "ok" }));
        });
        "#,
        false,
    )
    .await;
    assert_eq!(echoes(&r.fake.scripts("a")), ["cleanup"]);
    assert!(
        echoes(&r.fake.scripts("b")).is_empty(),
        "next did not run on b"
    );
    assert!(r.recap.stopped.unwrap().contains("a failed 'fails'"));
}

/// A failure's end carries its kind and where it belongs: an unreachable host, a closure that
/// throws, each with the task's line in the playbook.
#[tokio::test]
async fn failures_are_told_with_their_kind_host_task_and_line() {
    let fake = Fake {
        down: vec!["b".into()],
        ..Fake::default()
    };
    let r = run_on(
        r#"
        on("a", mark(#{ name: "x", present: true }).name("x"));
        on("all", task("throws", |h| { throw "no luck" }));
        "#,
        INVENTORY,
        false,
        fake,
    )
    .await;
    let events = r.events.events.lock().unwrap();
    let errors: Vec<(String, crate::error::RuntimeError)> = events
        .iter()
        .filter_map(|e| match e {
            crate::events::Event::TaskEnd(end) => end
                .error
                .as_ref()
                .map(|err| (end.msg.clone().unwrap_or_default(), (**err).clone())),
            _ => None,
        })
        .collect();
    let mut kinds: Vec<(&str, &str, ErrorKind, usize)> = errors
        .iter()
        .map(|(_, e)| (e.host.as_str(), e.task.as_str(), e.kind, e.line))
        .collect();
    kinds.sort_by_key(|k| k.0);
    assert_eq!(
        kinds,
        [
            ("a", "throws", ErrorKind::Closure, 3),
            ("b", "throws", ErrorKind::Unreachable, 3)
        ],
        "{kinds:?}"
    );
    let (msg, _) = errors
        .iter()
        .find(|(_, e)| e.task == "throws" && e.host == "a")
        .unwrap();
    assert!(msg.contains("no luck"), "{msg}");
    assert!(errors
        .iter()
        .all(|(_, e)| e.file.ends_with("play.rhai") && e.template.is_none()));
}
