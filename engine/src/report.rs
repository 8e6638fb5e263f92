//! Turns events into what the user reads: bounded live progress, one line per change or failure,
//! diffs, and a recap table. Or one JSON object per line for machines.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use console::style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, EventSink, TaskEnd, TaskStatus};

/// One JSON object per event on stdout.
#[derive(Default)]
pub struct JsonReporter {
    out: Mutex<()>,
}

/// The version of the JSON events' shape (docs/EVENTS.md), in every `run_start` and `error`
/// event: raised when a field changes meaning or goes away, not when one is added.
pub const EVENTS_SCHEMA: u32 = 1;

/// The longest line an event shows, in bytes: a command's output may be one line of megabytes.
pub const MAX_LINE: usize = 1024;

/// `text` with every line longer than [`MAX_LINE`] cut there (at a character boundary) and
/// ended with a note of how many bytes were cut.
pub fn cap_lines(text: &str) -> Cow<'_, str> {
    if text.split('\n').all(|l| l.len() <= MAX_LINE) {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.len() <= MAX_LINE {
            out.push_str(line);
            continue;
        }
        let mut end = MAX_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&line[..end]);
        out.push_str(&format!(
            " [playbook: {} more bytes of this line not shown]",
            line.len() - end
        ));
    }
    Cow::Owned(out)
}

/// The event with the text it shows (messages, summaries, diffs, printed text) line-capped.
fn capped(event: &Event) -> Cow<'_, Event> {
    let long = |t: &str| t.split('\n').any(|l| l.len() > MAX_LINE);
    let cap = |t: &mut String| {
        if let Cow::Owned(c) = cap_lines(t) {
            *t = c;
        }
    };
    let needs = match event {
        Event::TaskEnd(t) => {
            [&t.msg, &t.summary].into_iter().flatten().any(|m| long(m))
                || t.diff
                    .as_ref()
                    .is_some_and(|d| [&d.before, &d.after].into_iter().flatten().any(|m| long(m)))
        }
        Event::Print { text, .. } => long(text),
        Event::TaskRetry { msg, .. } => long(msg),
        Event::Error { message, .. } => long(message),
        Event::RunStart { .. }
        | Event::PhaseStart { .. }
        | Event::TaskStart { .. }
        | Event::BatchStart { .. } => false,
        Event::RolloutStop { reason, .. } => long(reason),
        Event::Recap { .. } => false,
    };
    if !needs {
        return Cow::Borrowed(event);
    }
    let mut e = event.clone();
    match &mut e {
        Event::TaskEnd(t) => {
            t.msg.iter_mut().chain(t.summary.iter_mut()).for_each(cap);
            if let Some(d) = &mut t.diff {
                d.before.iter_mut().chain(d.after.iter_mut()).for_each(cap);
            }
        }
        Event::Print { text, .. } => cap(text),
        Event::TaskRetry { msg, .. } => cap(msg),
        Event::Error { message, .. } => cap(message),
        Event::RolloutStop { reason, .. } => cap(reason),
        _ => {}
    }
    Cow::Owned(e)
}

impl EventSink for JsonReporter {
    fn emit(&self, event: &Event) {
        let event = &*capped(event);
        // Every event is a JSON object that starts with "event": the added fields go at its end.
        let Ok(mut line) = serde_json::to_string(event) else {
            return;
        };
        line.pop();
        if matches!(event, Event::RunStart { .. } | Event::Error { .. }) {
            line.push_str(&format!(",\"schema\":{EVENTS_SCHEMA}"));
        }
        line.push_str(&format!(",\"ts\":\"{}\"}}", now_rfc3339()));
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

/// The time now as RFC 3339 in UTC with milliseconds (`2026-12-05T09:12:44.123Z`).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis
    )
}

/// Human output. Live progress is one bar however many hosts run: the bar counts finished
/// task runs and names a few of the ones in flight.
pub struct TextReporter {
    verbose: u8,
    bar: ProgressBar,
    interactive: bool,
    running: Mutex<Vec<(String, String)>>,
    /// Task runs started in this phase: handlers, which the phase's total leaves out, extend it.
    started: std::sync::atomic::AtomicU64,
}

/// In-flight runs named on the progress line; the rest are counted.
const RUNNING_SHOWN: usize = 3;

impl TextReporter {
    pub fn new(verbose: u8) -> Self {
        let interactive = console::Term::stdout().is_term();
        let bar = if interactive {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        TextReporter {
            verbose,
            bar,
            interactive,
            running: Mutex::new(Vec::new()),
            started: Default::default(),
        }
    }

    fn line(&self, text: &str) {
        if self.interactive {
            self.bar.println(text);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }

    fn update_running(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts: Vec<String> = running
            .iter()
            .take(RUNNING_SHOWN)
            .map(|(h, t)| format!("{h}: {t}"))
            .collect();
        if running.len() > RUNNING_SHOWN {
            parts.push(format!("+{} more", running.len() - RUNNING_SHOWN));
        }
        self.bar.set_message(parts.join(" · "));
    }

    fn task_end(&self, e: &TaskEnd) {
        let show = match e.status {
            TaskStatus::Ok => self.verbose > 0 || e.msg.is_some(),
            TaskStatus::Skipped => {
                self.verbose > 0
                    || e.msg
                        .as_deref()
                        .is_some_and(|m| m.starts_with("depends on"))
            }
            _ => true,
        };
        if !show {
            return;
        }
        let label = match (e.status, e.check) {
            (TaskStatus::Changed, true) => style("would change").yellow(),
            (TaskStatus::Changed, false) => style("changed").yellow(),
            (TaskStatus::Ok, _) => style("ok").green(),
            (TaskStatus::Failed, _) if e.ignored => style("failed (ignored)").red(),
            (TaskStatus::Failed, _) if e.rescued => style("failed (rescued)").red(),
            (TaskStatus::Unreachable, _) if e.ignored => style("unreachable (ignored)").red(),
            (TaskStatus::Failed, _) => style("FAILED").red().bold(),
            (TaskStatus::Skipped, _) => style("skipped").cyan(),
            (TaskStatus::Unreachable, _) => style("UNREACHABLE").red().bold(),
        };
        let mut text = format!(
            "{:<13} {}  {}",
            label.to_string(),
            style(&e.host).bold(),
            e.task
        );
        if e.handler {
            text.push_str(" (handler)");
        }
        if let Some(s) = &e.summary {
            text.push_str(&format!(" — {s}"));
        }
        if let Some(m) = &e.msg {
            text.push_str(&format!(": {}", without_the_name(&e.task, m)));
        }
        if self.verbose > 0 {
            text.push_str(&format!(" ({} ms)", e.duration_ms));
        }
        self.line(&text);
        if let Some(d) = &e.diff {
            let mut out = String::new();
            for l in d.unified().lines() {
                let styled = if l.starts_with('+') && !l.starts_with("+++") {
                    style(l).green().to_string()
                } else if l.starts_with('-') && !l.starts_with("---") {
                    style(l).red().to_string()
                } else {
                    l.to_string()
                };
                out.push_str(&styled);
                out.push('\n');
            }
            self.line(out.trim_end());
        }
    }
}

/// A message that begins with what the task's default name already shows (`command: CMD` and
/// "CMD failed with rc 3"), less that repetition; also when the name shows the command cut short.
fn without_the_name<'a>(task: &str, msg: &'a str) -> &'a str {
    const FAILED: &str = " failed with rc ";
    let Some((_, shown)) = task.split_once(": ").filter(|(_, s)| !s.is_empty()) else {
        return msg;
    };
    if !msg.starts_with(shown) {
        return msg;
    }
    // Default names show a command's first 60 characters.
    let cut = shown.chars().count() >= 60;
    match msg[shown.len()..].find(FAILED) {
        Some(at) if at == 0 || cut => &msg[shown.len() + at + 1..],
        _ => msg,
    }
}

impl EventSink for TextReporter {
    fn emit(&self, event: &Event) {
        match &*capped(event) {
            Event::RunStart {
                playbook,
                hosts,
                check,
                ..
            } => {
                let mode = if *check {
                    " in check mode (nothing will be changed)"
                } else {
                    ""
                };
                self.line(&format!(
                    "{} {playbook} on {hosts} host(s){mode}",
                    style("playbook").bold()
                ));
            }
            Event::PhaseStart {
                phase,
                hosts,
                tasks,
                runs,
            } => {
                self.bar.set_prefix(phase.clone());
                self.bar.set_length(*runs as u64);
                self.bar.set_position(0);
                self.started.store(0, std::sync::atomic::Ordering::SeqCst);
                self.line(&format!(
                    "{} {phase} ({tasks} task(s), {hosts} host(s))",
                    style("== phase").bold()
                ));
            }
            Event::BatchStart {
                batch,
                batches,
                hosts,
                ..
            } => {
                // A batch of a hundred hosts would fill the screen.
                const SHOWN: usize = 8;
                let mut names = hosts
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if hosts.len() > SHOWN {
                    names += &format!(" +{} more", hosts.len() - SHOWN);
                }
                self.line(&format!(
                    "{} batch {batch}/{batches} ({} host(s)): {names}",
                    style("--").bold(),
                    hosts.len()
                ))
            }
            Event::RolloutStop {
                phase,
                batch,
                batches,
                not_reached,
                reason,
                ..
            } => {
                let mut text = format!(
                    "rollout of phase '{phase}' stopped after batch {batch}/{batches}: {reason}"
                );
                if !not_reached.is_empty() {
                    text += &format!("; not reached: {}", not_reached.join(", "));
                }
                self.line(&style(text).red().bold().to_string());
            }
            Event::TaskStart { host, task, .. } => {
                let started = self
                    .started
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1;
                if started > self.bar.length().unwrap_or(0) {
                    self.bar.set_length(started);
                }
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((host.clone(), task.clone()));
                self.update_running();
            }
            Event::TaskEnd(e) => {
                {
                    let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(i) = running
                        .iter()
                        .position(|(h, t)| *h == e.host && *t == e.task)
                    {
                        running.remove(i);
                    }
                }
                self.bar.inc(1);
                self.update_running();
                self.task_end(e);
            }
            Event::TaskRetry {
                task,
                host,
                attempt,
                attempts,
                delay_s,
                msg,
                ..
            } if self.verbose > 0 => self.line(&format!(
                "{:<13} {}  {task} (attempt {attempt}/{attempts}, again in {delay_s} s): {msg}",
                style("retrying").yellow().to_string(),
                style(host).bold(),
            )),
            Event::TaskRetry { .. } => {}
            Event::Print { host, text } => match host {
                Some(h) => self.line(&format!("{} {text}", style(format!("[{h}]")).dim())),
                None => self.line(text),
            },
            // Shown on stderr by the command line, with the source line it points at.
            Event::Error { .. } => {}
            Event::Recap {
                hosts,
                check,
                interrupted,
                not_reached,
                stopped,
                duration_ms,
            } => {
                if *interrupted {
                    self.line(
                        &style("interrupted: tasks in flight were abandoned, connections closed")
                            .red()
                            .to_string(),
                    );
                }
                self.bar.finish_and_clear();
                let width = hosts.keys().map(|h| h.len()).max().unwrap_or(4).max(4);
                let mut t = format!(
                    "\n{}{}\n{:<width$}  {:>6} {:>8} {:>7} {:>8} {:>12} {:>8} {:>8}\n",
                    style("RECAP").bold(),
                    if *check {
                        " (check mode: nothing was changed; \"changed\" = would change; \
                         each task run counts once: ok = unchanged)"
                    } else {
                        " (each task run counts once: ok = unchanged, not Ansible's ok + changed)"
                    },
                    "host",
                    "ok",
                    "changed",
                    "failed",
                    "skipped",
                    "unreachable",
                    "ignored",
                    "rescued"
                );
                for (h, c) in hosts {
                    t.push_str(&format!(
                        "{h:<width$}  {:>6} {:>8} {:>7} {:>8} {:>12} {:>8} {:>8}\n",
                        c.ok, c.changed, c.failed, c.skipped, c.unreachable, c.ignored, c.rescued
                    ));
                }
                if let Some(why) = stopped {
                    t.push_str(&format!("stopped: {why}\n"));
                }
                if !not_reached.is_empty() {
                    t.push_str(&format!(
                        "not reached (no task ran there): {}\n",
                        not_reached.join(", ")
                    ));
                }
                let changed: usize = hosts.values().map(|c| c.changed).sum();
                let failed: usize = hosts.values().map(|c| c.failed + c.unreachable).sum();
                t.push_str(&format!(
                    "{changed} changed, {failed} failed or unreachable, {:.1} s",
                    *duration_ms as f64 / 1000.0
                ));
                self.line(&t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_does_not_repeat_the_command_its_name_shows() {
        let long = "x".repeat(70);
        let cases = [
            (
                "command: ls /x",
                "ls /x failed with rc 2",
                "failed with rc 2",
            ),
            // The name shows a long command cut short.
            (
                &format!("command: {}", &long[..60]) as &str,
                &format!("{long} failed with rc 1") as &str,
                "failed with rc 1",
            ),
            // A name of its own says other things than the message.
            (
                "restart: ls",
                "ls -l failed with rc 2",
                "ls -l failed with rc 2",
            ),
            (
                "deploy",
                "deploy failed with rc 1",
                "deploy failed with rc 1",
            ),
            (
                "file: /etc",
                "/etc/x: permission denied",
                "/etc/x: permission denied",
            ),
        ];
        for (task, msg, shown) in cases {
            assert_eq!(without_the_name(task, msg), shown, "{task} / {msg}");
        }
    }

    #[test]
    fn long_lines_are_capped_with_what_was_cut() {
        assert!(matches!(cap_lines("short\nlines"), Cow::Borrowed(_)));
        let long = format!("{}é{}", "a".repeat(MAX_LINE - 1), "b".repeat(5000));
        let text = format!("before\n{long}\nafter");
        let capped = cap_lines(&text);
        let lines: Vec<&str> = capped.lines().collect();
        assert_eq!(lines[0], "before");
        // "é" straddles the limit: the cut falls before it, never inside it.
        assert_eq!(
            lines[1],
            format!(
                "{} [playbook: 5002 more bytes of this line not shown]",
                "a".repeat(MAX_LINE - 1)
            )
        );
        assert_eq!(lines[2], "after");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(
            super::rfc3339(4_107_542_399, 999),
            "2100-02-28T23:59:59.999Z"
        );
    }
}
