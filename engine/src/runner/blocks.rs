//! `block([...]).rescue([...]).always([...])` on one host: a failure in the body skips the rest
//! of the body and runs the rescue tasks; the always tasks run in any case; the host fails when
//! the block ends only if the body failed unrescued or an always task failed.

use std::sync::atomic::Ordering;

use super::{Done, State};
use crate::plan::{BlockRole, TaskId};

/// The block a host is in, and what failed in it so far.
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockRun {
    id: usize,
    has_rescue: bool,
    body_failed: bool,
    rescue_failed: bool,
    always_failed: bool,
    /// The first task that failed in the block, which any_errors_fatal names.
    failed_task: Option<TaskId>,
}

/// What the host does with a task of a block.
pub(super) enum Gate {
    Run,
    /// Not run, reported as nothing: the body after its failure, a rescue that is not needed.
    Pass(Done),
}

impl State {
    /// Ends the block the host was in, unless `next` belongs to it: a failure it did not rescue
    /// fails the host now. `next` is None at the end of the phase.
    pub(super) fn settle_block(&self, host: &str, next: Option<TaskId>) {
        let h = &self.hosts[host];
        let mut slot = h.block.lock().unwrap_or_else(|e| e.into_inner());
        let Some(run) = *slot else { return };
        let same = next
            .and_then(|t| self.plan.tasks[t].block)
            .is_some_and(|b| b.id == run.id);
        if same {
            return;
        }
        *slot = None;
        let unrescued = run.body_failed && (!run.has_rescue || run.rescue_failed);
        if unrescued || run.always_failed {
            h.dead.store(true, Ordering::SeqCst);
            drop(slot);
            if let Some(t) = run.failed_task {
                self.fail_fast(t, host);
            }
        }
    }

    /// Whether the host runs task `tid` of a block.
    pub(super) fn block_gate(&self, tid: TaskId, host: &str) -> Gate {
        let Some(part) = self.plan.tasks[tid].block else {
            return Gate::Run;
        };
        let mut slot = self.hosts[host]
            .block
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let run = slot.get_or_insert(BlockRun {
            id: part.id,
            has_rescue: part.has_rescue,
            body_failed: false,
            rescue_failed: false,
            always_failed: false,
            failed_task: None,
        });
        match part.role {
            BlockRole::Body if run.body_failed => Gate::Pass(Done::NotRun { selected: true }),
            BlockRole::Rescue if !run.body_failed || run.rescue_failed => {
                Gate::Pass(Done::NotRun { selected: false })
            }
            _ => Gate::Run,
        }
    }

    /// Records a failure of a block's task on the host. Returns whether the block takes it
    /// (the host fails, if it does, when the block ends), and whether a rescue will handle it.
    pub(super) fn block_failure(&self, tid: TaskId, host: &str) -> Option<bool> {
        let part = self.plan.tasks[tid].block?;
        let mut slot = self.hosts[host]
            .block
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let run = slot.as_mut().filter(|r| r.id == part.id)?;
        run.failed_task.get_or_insert(tid);
        Some(match part.role {
            BlockRole::Body => {
                run.body_failed = true;
                run.has_rescue
            }
            BlockRole::Rescue => {
                run.rescue_failed = true;
                false
            }
            BlockRole::Always => {
                run.always_failed = true;
                false
            }
        })
    }
}
