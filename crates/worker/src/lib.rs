//! The task loop of a task-owning service.
//!
//! For each task message: claim the task (its lease and its target's lock), heartbeat while
//! the handler runs, store the outcome (which releases the target and dispatches the next
//! waiting task), and only then ack. A message for a task whose target is busy is acked and
//! the task stays queued: the holder dispatches it when it finishes. A worker that dies leaves
//! an unacked message (redelivered) and a lease that lapses (swept): either way another worker
//! resumes the task.

use bus::{Bus, Disposition, Handler, Incoming};
use contract::{TaskEvent, TaskMessage};
use domain::{TaskId, TaskStatus, TaskType};
use futures_util::FutureExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use store::{Claim, Store, Task};

/// What a handler concluded.
#[derive(Debug)]
pub enum Outcome {
    Success(Option<serde_json::Value>),
    Warning(String),
    Error(String),
}

/// Writes a task's log lines to the state database and publishes them as events.
#[derive(Clone)]
pub struct TaskLog {
    store: Store,
    bus: Bus,
    task: TaskId,
}

impl TaskLog {
    pub fn new(store: Store, bus: Bus, task: TaskId) -> Self {
        Self { store, bus, task }
    }

    pub async fn line(&self, level: &str, message: impl Into<String>) {
        let message = message.into();
        if !bus::fence::still_held() {
            // A worker whose lease expired writes nothing more into the task's history.
            return tracing::warn!(task = %self.task, "not logged (the lease expired): {message}");
        }
        match level {
            "error" => tracing::error!(task = %self.task, "{message}"),
            "warning" => tracing::warn!(task = %self.task, "{message}"),
            _ => tracing::info!(task = %self.task, "{message}"),
        }
        // The line's record and its event at once: the event is for watchers and is not
        // waited for by the broker's confirm; the record is the history.
        let event = TaskEvent::Log {
            task: self.task,
            level: level.into(),
            message: message.clone(),
        };
        let (stored, ()) = tokio::join!(
            self.store.append_log(self.task, level, &message),
            self.bus.publish_event(&event)
        );
        if let Err(e) = stored {
            tracing::warn!(error = %e, "could not write the task log");
        }
    }

    pub async fn info(&self, message: impl Into<String>) {
        self.line("info", message).await
    }
    pub async fn warn(&self, message: impl Into<String>) {
        self.line("warning", message).await
    }
    pub async fn error(&self, message: impl Into<String>) {
        self.line("error", message).await
    }
}

pub trait TaskHandler: Send + Sync + 'static {
    fn run(&self, task: &Task, log: &TaskLog) -> impl Future<Output = Outcome> + Send;
}

pub struct WorkerConfig {
    pub service: &'static str,
    /// Tasks whose handlers run at once (`HOSTING_PREFETCH`).
    pub prefetch: u16,
    pub lease: Duration,
}

/// Task messages one instance holds per handler slot (`HOSTING_MESSAGE_PREFETCH` sets the
/// total): while `WorkerConfig::prefetch` tasks are claimed and run, the next few messages
/// are at hand, and the tasks that end have their outcomes stored and their messages acked
/// outside the slots. Still a small prefetch (DESIGN.md): another instance is not starved of
/// messages this one cannot run soon.
const MESSAGES_PER_SLOT: u16 = 4;

pub struct Worker<H> {
    store: Store,
    bus: Bus,
    handler: H,
    id: String,
    lease: Duration,
    service: &'static str,
    max_attempts: i32,
    /// One per handler that may run at once.
    running: tokio::sync::Semaphore,
}

impl<H: TaskHandler> Worker<H> {
    /// Consumes this service's task queue forever.
    pub async fn run(store: Store, bus: Bus, handler: H, config: WorkerConfig) {
        let host = this_host();
        let id = format!(
            "{}@{host}:{}:{}",
            config.service,
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        tracing::info!(worker = %id, "task worker starting");
        let mine: Vec<&str> = TaskType::ALL
            .iter()
            .filter(|t| t.owner().as_str() == config.service)
            .map(|t| t.as_str())
            .collect();
        telemetry::metrics::preset_task_series(&mine, &["success", "warning", "error"]);
        reclaim_from_dead_processes(&store, config.service, &host).await;
        loop {
            match bus.declare_topology(&[config.service]).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot declare the task queue yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let queue = bus.topology().task_queue(config.service);
        let worker = Arc::new(Worker {
            store,
            bus: bus.clone(),
            handler,
            id,
            lease: config.lease,
            service: config.service,
            max_attempts: config::parse("HOSTING_MAX_ATTEMPTS", 5).unwrap_or(5),
            running: tokio::sync::Semaphore::new(usize::from(config.prefetch.max(1))),
        });
        let per_slot = config.prefetch.saturating_mul(MESSAGES_PER_SLOT);
        let messages = config::parse("HOSTING_MESSAGE_PREFETCH", per_slot)
            .unwrap_or(per_slot)
            .max(config.prefetch);
        bus.consume(&queue, messages, worker).await
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Tasks that a process of this service on this host held when it died (killed, crashed) are
/// queued again at once, not after their lease: a service restarted after a crash resumes its
/// work right away. A process counts as alive while its pid runs this service's program (a
/// pid taken over by another program means it died), so a live instance's tasks stay its own.
async fn reclaim_from_dead_processes(store: &Store, service: &str, host: &str) {
    let max_attempts = config::parse("HOSTING_MAX_ATTEMPTS", 5).unwrap_or(5);
    let owners = match store.lease_owners_like(&format!("{service}@{host}:")).await {
        Ok(o) => o,
        Err(e) => return tracing::warn!(error = %e, "cannot look for tasks of dead processes"),
    };
    for owner in owners {
        let pid = owner.rsplit(':').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(service))
            })
        });
        if alive {
            continue;
        }
        match store.requeue_tasks_of(&owner, max_attempts).await {
            Ok(n) if n > 0 => {
                tracing::warn!(%owner, tasks = n, "resuming the tasks of a process that died")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot requeue the tasks of a dead process"),
        }
    }
}

impl<H: TaskHandler> Worker<H> {
    /// Returns the task to the queue, retrying while the state database is away (for as long
    /// as the lease would last); the message is acked either way, since the task's own
    /// dispatch (or the sweeper, once the lease lapses) brings it back.
    async fn give_back(&self, task: &Task, why: &str) -> Disposition {
        let give_up = std::time::Instant::now() + self.lease;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.store.requeue_interrupted(task, &self.id, why).await {
                Ok(_) => {
                    tracing::warn!(task = %task.id, "{why}");
                    return Disposition::Ack;
                }
                Err(e) if std::time::Instant::now() + delay < give_up => {
                    tracing::warn!(error = %e, "cannot queue the task again yet; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot queue the task again; the sweeper will once its lease lapses");
                    return Disposition::Ack;
                }
            }
        }
    }
}

impl<H: TaskHandler> Worker<H> {
    /// Whether the task needs a host whose agent has gone silent: it then stays queued, with a
    /// line in its log naming the agent, and the sweeper dispatches it again (every
    /// `HOSTING_REDISPATCH_AFTER_SECS`) until the agent is back. Its message is acked, so
    /// tasks of a host that is down do not fill this worker's prefetch, and the tasks of other
    /// hosts go on.
    async fn waits_for_agents(&self, msg: &TaskMessage) -> bool {
        if matches!(msg.task_type, TaskType::Noop | TaskType::PurgeTasks) {
            return false;
        }
        let silence = bus::agent::heartbeat_interval() * 3;
        let away = match self.store.agents_away(msg.task, silence).await {
            Ok(a) if !a.is_empty() => a,
            // Unknown (the store is away): the claim that follows finds out.
            _ => return false,
        };
        let names: Vec<String> = away
            .iter()
            .map(|a| {
                let at = a
                    .last_seen
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                format!(
                    "{} on {} server {} (last seen {at})",
                    a.service, a.kind, a.server
                )
            })
            .collect();
        let line = format!(
            "waiting: the agent {} is unreachable; the task stays queued and runs once it is back",
            names.join(", ")
        );
        // Said once per wait, not at every dispatch.
        if self.store.last_log_line(msg.task).await.ok().flatten() != Some(line.clone()) {
            TaskLog::new(self.store.clone(), self.bus.clone(), msg.task)
                .info(line)
                .await;
        }
        true
    }
}

impl<H: TaskHandler> Handler for Worker<H> {
    async fn handle(&self, message: Incoming) -> Disposition {
        // A message is checked against what it names before anything runs: its version, its
        // body, and that the task it names is of its type and this service's.
        match message.message_type.as_deref() {
            Some(contract::TASK_MESSAGE_TYPE) => {}
            other => {
                return Disposition::dead_letter(
                    format!(
                        "a message of type {other:?} on a task queue: only {} is known here",
                        contract::TASK_MESSAGE_TYPE
                    ),
                    true,
                )
            }
        }
        let msg: TaskMessage = match serde_json::from_slice(&message.data) {
            Ok(m) => m,
            Err(e) => {
                return Disposition::dead_letter(
                    format!("the task message does not parse: {e}"),
                    true,
                )
            }
        };
        if msg.task_type.owner().as_str() != self.service {
            return Disposition::dead_letter(
                format!(
                    "a {} task sent to the {} (it belongs to the {})",
                    msg.task_type,
                    self.service,
                    msg.task_type.owner().as_str()
                ),
                false,
            );
        }
        if self.waits_for_agents(&msg).await {
            return Disposition::Ack;
        }
        // A handler's slot before the claim: a claimed task runs at once (its `processing`
        // is true), and one that waits is still `queued`. The slot is given back when the
        // handler returns; storing the outcome and the ack happen outside it. The semaphore
        // is never closed.
        let slot = self.running.acquire().await.ok();
        let started = std::time::Instant::now();
        // The claim is held locally until `claimed + lease` at most, measured from before it
        // was asked for: the store's lease cannot end before that.
        let claimed = std::time::Instant::now();
        let claim = self
            .store
            .claim_task(msg.task, msg.task_type, &self.id, self.lease)
            .await;
        let task = match claim {
            Ok(Claim::Claimed(t)) => *t,
            Ok(Claim::OtherType(actual)) => {
                return Disposition::dead_letter(
                    format!(
                        "the message says task {} is a {}, but it is a {actual}: the message is not that task's, and the task is left alone",
                        msg.task, msg.task_type
                    ),
                    false,
                )
            }
            Ok(Claim::TargetBusy) => {
                tracing::info!(task = %msg.task, "its site or platform is busy; it waits for the current task");
                return Disposition::Ack;
            }
            Ok(Claim::HeldElsewhere) | Ok(Claim::Finished(_)) => return Disposition::Ack,
            Err(store::StoreError::NotFound(_)) => {
                return Disposition::dead_letter(format!("there is no task {}", msg.task), false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the task; retrying");
                return Disposition::Retry;
            }
        };
        tracing::info!(task = %task.id, task_type = %task.task_type, attempt = task.attempts, "task started");
        // Its wait in the queue, from acceptance to its first start (a resumed attempt
        // waited for its worker's death, not in the queue).
        if task.attempts <= 1 {
            if let Some(waited) = task
                .started_at
                .map(|s| s - task.created_at)
                .and_then(|d| std::time::Duration::try_from(d).ok())
            {
                telemetry::metrics::task_started(task.task_type.as_str(), waited);
            }
        }
        self.bus
            .publish_event(&TaskEvent::Status {
                task: task.id,
                status: TaskStatus::Processing,
                message: None,
            })
            .await;

        // The lease is renewed every third of it. Once it is lost (another worker took the
        // task over), the handler is stopped where it is: the other worker resumes the task,
        // and this one, fenced off from the store and the agents, must change nothing more.
        let lease_lost = std::sync::Arc::new(tokio::sync::Notify::new());
        let fence = bus::fence::Fence {
            task: task.id,
            epoch: task.lease_epoch,
        };
        bus::fence::renewed(fence, claimed + self.lease);
        let heartbeat = {
            let (store, t, id, lease, lost) = (
                self.store.clone(),
                task.clone(),
                self.id.clone(),
                self.lease,
                lease_lost.clone(),
            );
            tokio::spawn(async move {
                let mut valid_until = claimed + lease;
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let asked = std::time::Instant::now();
                    if asked >= valid_until {
                        // Stopped or cut off from the store past the lease: the sweeper may
                        // have handed the task to another worker already.
                        tracing::error!(task = %t.id, "the task's lease expired; stopping it here");
                        bus::fence::expired(fence);
                        lost.notify_one();
                        return;
                    }
                    match store.heartbeat(&t, &id, lease).await {
                        Ok(true) => {
                            valid_until = asked + lease;
                            bus::fence::renewed(fence, valid_until);
                        }
                        Ok(false) => {
                            tracing::error!(task = %t.id, "lost the task's lease; stopping it here");
                            bus::fence::expired(fence);
                            lost.notify_one();
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let log = TaskLog::new(self.store.clone(), self.bus.clone(), task.id);
        // A handler that panics (a bug) fails its task with the reason, not the service.
        // `HOSTING_PANIC_IN_TASK=<type>` makes one panic, for the tests that prove it.
        let injected =
            std::env::var("HOSTING_PANIC_IN_TASK").is_ok_and(|t| t == task.task_type.as_str());
        // The task's span: what the trace of a task shows of it, and the parent of every RPC
        // the handler makes (the agents' spans join it).
        let task_span = tracing::info_span!(
            "task",
            otel.name = %format!("{} task", task.task_type),
            hosting.task.id = task.id.0,
            hosting.task.type = %task.task_type,
            hosting.task.attempt = task.attempts,
            hosting.site.id = tracing::field::Empty,
            hosting.platform.id = tracing::field::Empty,
        );
        if let Some(site) = task.site {
            task_span.record("hosting.site.id", site.0);
        }
        if let Some(platform) = task.platform {
            task_span.record("hosting.platform.id", platform.0);
        }
        let run = bus::fence::scope(
            fence,
            std::panic::AssertUnwindSafe(tracing::Instrument::instrument(
                async {
                    if injected {
                        panic!(
                            "panic injected in a {} task (HOSTING_PANIC_IN_TASK)",
                            task.task_type
                        );
                    }
                    // On the heap: a saga's future is large, and the worker thread's stack is not.
                    Box::pin(self.handler.run(&task, &log)).await
                },
                task_span,
            ))
            .catch_unwind(),
        );
        let handler_started = std::time::Instant::now();
        let ran = tokio::select! {
            ran = run => ran,
            _ = lease_lost.notified() => {
                heartbeat.abort();
                bus::fence::released(fence);
                return Disposition::Ack;
            }
        };
        heartbeat.abort();
        bus::fence::released(fence);
        drop(slot);
        let ran_for = handler_started.elapsed();
        let outcome = match ran {
            Ok(o) => o,
            Err(panic) => {
                let why = bus::panic_message(&panic);
                tracing::error!(task = %task.id, panic = %why, "the task's handler panicked");
                log.error(format!(
                    "the {} task stopped on an internal error ({why}); report it with the service's log",
                    task.task_type
                ))
                .await;
                Outcome::Error(format!(
                    "internal error in the {} task: {why}",
                    task.task_type
                ))
            }
        };

        // A task that failed while the state database or the broker was away may have failed
        // only because of that: it goes back to the queue and its next attempt resumes it
        // (sagas pick up their progress), unless it has used its attempts.
        if let Outcome::Error(e) = &outcome {
            let outage = store::outage_since(started) || bus::outage_since(started);
            if outage && task.attempts < self.max_attempts {
                let why = format!("interrupted by an outage of the state database or the broker ({e}); the task is queued again and will resume");
                return self.give_back(&task, &why).await;
            }
        }

        let (status, error, result) = match &outcome {
            Outcome::Success(r) => (TaskStatus::Success, None, r.clone()),
            Outcome::Warning(w) => (TaskStatus::Warning, Some(w.clone()), None),
            Outcome::Error(e) => (TaskStatus::Error, Some(e.clone()), None),
        };
        // The state database may be away for a moment (a restart): the outcome is kept
        // trying for as long as the lease would have lasted, so the work is not redone.
        let give_up = std::time::Instant::now() + self.lease;
        let mut delay = Duration::from_millis(200);
        let finished = loop {
            match self
                .store
                .finish_task(&task, &self.id, status, error.as_deref(), result.as_ref())
                .await
            {
                Err(e) if e.is_unavailable() && std::time::Instant::now() + delay < give_up => {
                    tracing::warn!(error = %e, "cannot store the task's outcome yet; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => break other,
            }
        };
        match finished {
            // Another worker holds the task now (this one lost its lease): its outcome is the
            // one that counts, and this one is neither announced nor counted.
            Ok(false) => {
                tracing::warn!(task = %task.id, "the outcome was not stored: another worker holds the task now");
                Disposition::Ack
            }
            Ok(true) => {
                tracing::info!(task = %task.id, %status, "task finished");
                telemetry::metrics::task_finished(
                    task.task_type.as_str(),
                    status.as_str(),
                    ran_for,
                );
                self.bus
                    .publish_event(&TaskEvent::Status {
                        task: task.id,
                        status,
                        message: error,
                    })
                    .await;
                Disposition::Ack
            }
            // The outcome is not stored: the message comes back and the (idempotent) handler
            // runs again, which is the at-least-once contract.
            Err(e) => {
                tracing::error!(error = %e, "cannot store the task's outcome; it will run again");
                Disposition::Retry
            }
        }
    }
}
