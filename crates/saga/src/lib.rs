//! Sagas: multi-step tasks whose progress is stored, so that any instance can resume or
//! unwind them after a crash.
//!
//! Each step has an action and, where it creates something, an undo, declared side by side.
//! Events (`started`, `done`, `failed`, `undo-started`, `undone`) are written to the state
//! database before and after each step, idempotently. Actions and undos must be idempotent:
//! after a crash the step that was running is run again.
//!
//! On a failure, the failed step's undo runs too (it may have half-created something), then
//! every completed step's undo, in reverse order.
//!
//! Two knobs prove the idempotency rule in end-to-end tests, through the environment of a
//! service: `HOSTING_SAGA_FAIL_AT=<saga>:<step>` makes that step's action fail after it ran,
//! and `HOSTING_SAGA_REPEAT_ACTIONS=1` runs every action twice. A third proves crash safety:
//! `HOSTING_SAGA_CRASH_AT=<saga>:<step>:<before|after>` aborts the process (as SIGKILL would:
//! no destructor, no cleanup) right before that step's action runs, or right after it
//! succeeded and before that is recorded; the test harness restarts the service without it.

use domain::TaskId;
use std::future::Future;
use std::time::Duration;
use store::Store;

pub use contract::steps::SagaStep;

pub trait Saga: Send + Sync {
    /// Its steps (an enum of `contract::steps`), which `action` and `undo` match on.
    type Step: SagaStep;
    /// The saga's name, as used by `HOSTING_SAGA_FAIL_AT`.
    fn name(&self) -> &'static str;
    fn steps(&self) -> &'static [Self::Step];
    fn action(&self, step: Self::Step) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn undo(&self, step: Self::Step) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// A step failed and every step that had started was undone.
    Unwound {
        error: String,
    },
    /// A step failed and an undo failed too: something may be left behind, and the message
    /// says what.
    UnwindFailed {
        error: String,
        undo_error: String,
    },
}

/// Test knobs read from the environment once per run.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub fail_at: Option<(String, String)>,
    /// `HOSTING_SAGA_PANIC_AT=<saga>:<step>`: that step's action panics (as a bug would).
    pub panic_at: Option<(String, String)>,
    pub repeat_actions: bool,
    /// `HOSTING_SAGA_CRASH_AT=<saga>:<step>:<before|after>`.
    pub crash_at: Option<(String, String, When)>,
}

/// Where, around a step's action, a crash is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

impl Faults {
    pub fn from_env() -> Self {
        let fail_at = std::env::var("HOSTING_SAGA_FAIL_AT")
            .ok()
            .and_then(|v| v.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
        let repeat_actions = std::env::var("HOSTING_SAGA_REPEAT_ACTIONS").is_ok_and(|v| v == "1");
        let panic_at = std::env::var("HOSTING_SAGA_PANIC_AT")
            .ok()
            .and_then(|v| v.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
        let crash_at = std::env::var("HOSTING_SAGA_CRASH_AT").ok().and_then(|v| {
            let mut parts = v.splitn(3, ':');
            let (saga, step, when) = (parts.next()?, parts.next()?, parts.next()?);
            let when = match when {
                "before" => When::Before,
                "after" => When::After,
                _ => return None,
            };
            Some((saga.to_owned(), step.to_owned(), when))
        });
        Self {
            fail_at,
            panic_at,
            repeat_actions,
            crash_at,
        }
    }

    /// Aborts the process if a crash is asked for at this point (a test knob). Work that is
    /// not a saga (a backup) names its own points with it.
    pub fn crash_point(&self, saga: &str, step: &str, when: When) {
        if self
            .crash_at
            .as_ref()
            .is_some_and(|(s, st, w)| s == saga && st == step && *w == when)
        {
            eprintln!("HOSTING_SAGA_CRASH_AT: aborting {when:?} step '{step}' of {saga}");
            std::process::abort();
        }
    }
}

/// Runs a step's action or undo so that a panic in it (a bug) is the step's failure, and the
/// saga unwinds as for any other: the task ends in a known state and the service lives on.
async fn guarded(step: &str, work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => Err(anyhow::anyhow!(
            "step '{step}' stopped on an internal error ({}); report it with the service's log",
            bus::panic_message(&panic)
        )),
    }
}

/// Whether a step that failed did so while this process lost the state database or the
/// broker, and the task has attempts left to run it again.
async fn interrupted(store: &Store, task: TaskId, since: std::time::Instant) -> bool {
    if !(store::outage_since(since) || bus::outage_since(since)) {
        return false;
    }
    let max_attempts = config::parse("HOSTING_MAX_ATTEMPTS", 5).unwrap_or(5);
    // Unknown (the database is still away): the attempt is given back; the sweeper counts
    // attempts when it requeues.
    store
        .task(task)
        .await
        .map_or(true, |t| t.attempts < max_attempts)
}

/// Runs (or resumes) the saga of task `task`.
pub async fn run<S: Saga>(
    store: &Store,
    task: TaskId,
    saga: &S,
    faults: &Faults,
) -> anyhow::Result<Outcome> {
    // Every step's progress is written under the worker's claim: once another worker took the
    // task over, this one's next write is refused and it goes no further.
    let epoch = bus::fence::current()
        .filter(|f| f.task == task)
        .map(|f| f.epoch);
    let events = store.saga_events(task).await?;
    let has = |step: &str, event: &str| events.iter().any(|(s, e, _)| s == step && e == event);
    let steps = saga.steps();

    let unwinding = events
        .iter()
        .find(|(_, e, _)| e == "failed")
        .map(|(s, _, d)| format!("step '{}' failed: {}", s, d.clone().unwrap_or_default()));
    let error = match unwinding {
        Some(error) => {
            log(
                store,
                task,
                "warning",
                &format!("resuming the unwind of this task ({error})"),
            )
            .await;
            error
        }
        None => {
            let mut failure = None;
            for step in steps {
                if has(step.name(), "done") {
                    continue;
                }
                if has(step.name(), "started") {
                    log(
                        store,
                        task,
                        "info",
                        &format!("resuming step '{}' after an interruption", step.name()),
                    )
                    .await;
                }
                store
                    .record_saga_event_fenced(task, epoch, step.name(), "started", None)
                    .await?;
                log(
                    store,
                    task,
                    "info",
                    &format!("step '{}' started", step.name()),
                )
                .await;
                let panics = faults
                    .panic_at
                    .as_ref()
                    .is_some_and(|(s, st)| s == saga.name() && st == step.name());
                faults.crash_point(saga.name(), step.name(), When::Before);
                let step_started = std::time::Instant::now();
                let mut result = guarded(step.name(), async {
                    let r = saga.action(*step).await;
                    if panics {
                        panic!(
                            "panic injected at step '{}' (HOSTING_SAGA_PANIC_AT)",
                            step.name()
                        );
                    }
                    r
                })
                .await;
                if result.is_ok() && faults.repeat_actions {
                    result = guarded(step.name(), saga.action(*step)).await;
                }
                if result.is_ok()
                    && faults
                        .fail_at
                        .as_ref()
                        .is_some_and(|(s, st)| s == saga.name() && st == step.name())
                {
                    result = Err(anyhow::anyhow!(
                        "failure injected at step '{}' (HOSTING_SAGA_FAIL_AT)",
                        step.name()
                    ));
                }
                match result {
                    Ok(()) => {
                        faults.crash_point(saga.name(), step.name(), When::After);
                        store
                            .record_saga_event_fenced(task, epoch, step.name(), "done", None)
                            .await?;
                        log(store, task, "info", &format!("step '{}' done", step.name())).await;
                    }
                    Err(e) if interrupted(store, task, step_started).await => {
                        // Not the step's own failure: the state database or the broker went
                        // away under it. Nothing is undone; the task's next attempt runs the
                        // step again (actions are idempotent).
                        return Err(e.context(format!(
                            "step '{}' was interrupted by an outage of the state database or the broker",
                            step.name()
                        )));
                    }
                    Err(e) => {
                        let message = format!("{e:#}");
                        store
                            .record_saga_event_fenced(
                                task,
                                epoch,
                                step.name(),
                                "failed",
                                Some(&message),
                            )
                            .await?;
                        log(
                            store,
                            task,
                            "error",
                            &format!("step '{}' failed: {message}", step.name()),
                        )
                        .await;
                        failure = Some(format!("step '{}' failed: {message}", step.name()));
                        break;
                    }
                }
            }
            match failure {
                None => return Ok(Outcome::Completed),
                Some(f) => f,
            }
        }
    };

    // Unwind: reload the events (the failure was just recorded) and undo, in reverse, every
    // step that started and is not undone yet.
    // Every step's progress is written under the worker's claim: once another worker took the
    // task over, this one's next write is refused and it goes no further.
    let epoch = bus::fence::current()
        .filter(|f| f.task == task)
        .map(|f| f.epoch);
    let events = store.saga_events(task).await?;
    let has = |step: &str, event: &str| events.iter().any(|(s, e, _)| s == step && e == event);
    for step in steps.iter().rev() {
        if !has(step.name(), "started") || has(step.name(), "undone") || !step.undoable() {
            continue;
        }
        store
            .record_saga_event_fenced(task, epoch, step.name(), "undo-started", None)
            .await?;
        log(
            store,
            task,
            "info",
            &format!("undoing step '{}'", step.name()),
        )
        .await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match guarded(step.name(), saga.undo(*step)).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    tracing::warn!(step = step.name(), error = %format!("{e:#}"), "undo failed; retrying");
                    tokio_sleep(Duration::from_millis(500 * attempt)).await;
                }
                Err(e) => {
                    let undo_error = format!("undoing step '{}' failed: {e:#}", step.name());
                    log(store, task, "error", &undo_error).await;
                    return Ok(Outcome::UnwindFailed { error, undo_error });
                }
            }
        }
        store
            .record_saga_event_fenced(task, epoch, step.name(), "undone", None)
            .await?;
        telemetry::metrics::saga_undo(saga.name(), step.name());
        log(
            store,
            task,
            "info",
            &format!("step '{}' undone", step.name()),
        )
        .await;
    }
    Ok(Outcome::Unwound { error })
}

async fn tokio_sleep(d: Duration) {
    tokio::time::sleep(d).await
}

async fn log(store: &Store, task: TaskId, level: &str, message: &str) {
    match level {
        "error" => tracing::error!(task = %task, "{message}"),
        "warning" => tracing::warn!(task = %task, "{message}"),
        _ => tracing::info!(task = %task, "{message}"),
    }
    if let Err(e) = store.append_log(task, level, message).await {
        tracing::warn!(error = %e, "could not write the task log");
    }
}
