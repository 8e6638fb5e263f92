//! Turns events into what the user reads: bounded live progress, one line per change or failure,
//! diffs, and a recap table. Or one JSON object per line for machines.

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

impl EventSink for JsonReporter {
    fn emit(&self, event: &Event) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Human output. Live progress is one bar however many hosts run: the bar counts finished
/// task runs and names a few of the ones in flight.
pub struct TextReporter {
    verbose: u8,
    bar: ProgressBar,
    interactive: bool,
    running: Mutex<Vec<(String, String)>>,
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
            text.push_str(&format!(": {m}"));
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

impl EventSink for TextReporter {
    fn emit(&self, event: &Event) {
        match event {
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
            } => {
                self.bar.set_prefix(phase.clone());
                self.bar.set_length(0);
                self.bar.set_position(0);
                self.line(&format!(
                    "{} {phase} ({tasks} task(s), {hosts} host(s))",
                    style("== phase").bold()
                ));
            }
            Event::TaskStart { host, task, .. } => {
                self.bar.inc_length(1);
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
                    "\n{}{}\n{:<width$}  {:>6} {:>8} {:>7} {:>8} {:>12} {:>8}\n",
                    style("RECAP").bold(),
                    if *check {
                        " (check mode: nothing was changed; \"changed\" = would change)"
                    } else {
                        ""
                    },
                    "host",
                    "ok",
                    "changed",
                    "failed",
                    "skipped",
                    "unreachable",
                    "ignored"
                );
                for (h, c) in hosts {
                    t.push_str(&format!(
                        "{h:<width$}  {:>6} {:>8} {:>7} {:>8} {:>12} {:>8}\n",
                        c.ok, c.changed, c.failed, c.skipped, c.unreachable, c.ignored
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
