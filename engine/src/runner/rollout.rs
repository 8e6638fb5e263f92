//! A phase over its hosts: all at once, or batch by batch (`serial`: the whole phase and its
//! handlers on one batch, then the next), the run stopping after a batch whose failures say so
//! (`max_fail_percentage`, `any_errors_fatal`, or every host of the batch failed).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::State;
use crate::events::Event;
use crate::plan::TaskId;

/// Which hosts of the current phase run now and which have run: a task is waited for only on
/// those, since a later batch's hosts have not started.
#[derive(Default)]
pub(super) struct Batch {
    /// This batch's hosts and the earlier batches' of the phase.
    released: BTreeSet<String>,
    /// This batch's hosts, in inventory order: a run_once task runs on the first it targets.
    current: Vec<String>,
}

/// Why the run stopped before its last phase, for the recap.
#[derive(Clone, Debug, Default)]
pub(super) struct Stopped {
    pub reason: String,
    /// Hosts of the stopped phase's batches that never started.
    pub not_reached: Vec<String>,
}

impl State {
    /// Runs a phase; false when the run stops after it.
    pub(super) async fn run_phase(self: &Arc<Self>, pi: usize) -> bool {
        let plan = self.plan.clone();
        let phase = &plan.phases[pi];
        let hosts = self.phase_hosts(pi);
        self.sink.emit(&Event::PhaseStart {
            phase: phase.name.clone(),
            hosts: hosts.len(),
            tasks: phase.tasks.len(),
            runs: phase.tasks.iter().map(|&t| plan.tasks[t].hosts.len()).sum(),
        });
        *self.batch.lock().unwrap_or_else(|e| e.into_inner()) = Batch::default();
        let rollout = &phase.rollout;
        if !rollout.is_set() {
            self.run_batch(pi, hosts.clone(), hosts).await;
            self.run_handlers(pi).await;
            return true;
        }
        // Hosts that failed before the phase are in no batch (as in Ansible); they go with the
        // first one only to finish their tasks as not run.
        let (mut gone, live): (Vec<String>, Vec<String>) = hosts
            .into_iter()
            .partition(|h| self.hosts[h].dead.load(Ordering::SeqCst));
        let batches = rollout.batches(&live);
        for (i, batch) in batches.iter().enumerate() {
            self.sink.emit(&Event::BatchStart {
                phase: phase.name.clone(),
                batch: i + 1,
                batches: batches.len(),
                hosts: batch.clone(),
            });
            let mut run = std::mem::take(&mut gone);
            run.extend(batch.iter().cloned());
            self.run_batch(pi, run, batch.clone()).await;
            let halted = self.halted();
            // After any_errors_fatal, as in Ansible, no handler runs unless forced; the hosts
            // keep owing them.
            if halted.is_none() || self.opts.force_handlers {
                self.run_handlers(pi).await;
            }
            let failed: Vec<String> = batch
                .iter()
                .filter(|h| self.hosts[*h].dead.load(Ordering::SeqCst))
                .cloned()
                .collect();
            let Some(reason) = halted.or_else(|| rollout.stops_after(&failed, batch.len())) else {
                continue;
            };
            let not_reached: Vec<String> = batches[i + 1..].concat();
            self.sink.emit(&Event::RolloutStop {
                phase: phase.name.clone(),
                batch: i + 1,
                batches: batches.len(),
                failed,
                not_reached: not_reached.clone(),
                reason: reason.clone(),
            });
            let later: Vec<&str> = plan.phases[pi + 1..]
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let mut reason = format!(
                "phase '{}' stopped after batch {} of {}: {reason}",
                phase.name,
                i + 1,
                batches.len()
            );
            if !later.is_empty() {
                reason += &format!("; phases not run: {}", later.join(", "));
            }
            *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(Stopped {
                reason,
                not_reached,
            });
            return false;
        }
        true
    }

    /// The hosts any task of the phase targets, in inventory order (the order of batches).
    fn phase_hosts(&self, pi: usize) -> Vec<String> {
        let plan = &self.plan;
        let mut hosts: BTreeSet<&String> = BTreeSet::new();
        for &t in &plan.phases[pi].tasks {
            hosts.extend(&plan.tasks[t].hosts);
        }
        self.inventory
            .hosts()
            .filter(|e| hosts.contains(&e.name))
            .map(|e| e.name.clone())
            .collect()
    }

    /// Runs the phase's tasks on `run`, of which `current` is the batch (`run` may add hosts
    /// that only finish their tasks as not run).
    async fn run_batch(self: &Arc<Self>, pi: usize, run: Vec<String>, current: Vec<String>) {
        {
            let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            b.released.extend(run.iter().cloned());
            b.current = current;
        }
        // The phase's parts between flush_handlers() calls, each on every host of the batch,
        // then the handlers notified so far (the caller runs the last part's).
        let segments = self.plan.phases[pi].segments();
        for (i, seg) in segments.iter().enumerate() {
            if i > 0 {
                self.run_handlers(pi).await;
            }
            let mut joins = tokio::task::JoinSet::new();
            for h in &run {
                let st = self.clone();
                let (h, seg) = (h.clone(), seg.clone());
                joins.spawn(async move { st.run_host_phase(pi, seg, &h).await });
            }
            while joins.join_next().await.is_some() {}
        }
    }

    /// Whether the task has ended on every one of its hosts that has started the phase.
    pub(super) fn finished(&self, tid: TaskId) -> bool {
        let batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        self.plan.tasks[tid]
            .hosts
            .iter()
            .all(|h| !batch.released.contains(h) || done.contains_key(&(tid, h.clone())))
    }

    /// Whether the phase has reached the host: always, unless the phase rolls and the host's
    /// batch has not started (or the host is in none).
    pub(super) fn reached(&self, pi: usize, host: &str) -> bool {
        !self.plan.phases[pi].rollout.is_set()
            || self
                .batch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .released
                .contains(host)
    }

    /// The host that runs a run_once task for the batch: the first of its hosts in it (once per
    /// batch, as in Ansible).
    pub(super) fn run_once_host(&self, tid: TaskId) -> Option<String> {
        let batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        let hosts = &self.plan.tasks[tid].hosts;
        batch.current.iter().find(|h| hosts.contains(h)).cloned()
    }

    /// With any_errors_fatal, a failure on `host` stops every host of the batch from starting
    /// another task.
    pub(super) fn fail_fast(&self, tid: TaskId, host: &str) {
        let task = &self.plan.tasks[tid];
        if !self.plan.phases[task.phase].rollout.any_errors_fatal {
            return;
        }
        self.halt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| {
                format!(
                    "{host} failed '{}' (line {}) and the phase has any_errors_fatal",
                    task.name, task.pos.line
                )
            });
    }

    /// Why no task may start any more (any_errors_fatal), if so.
    pub(super) fn halted(&self) -> Option<String> {
        self.halt.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
