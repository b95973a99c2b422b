//! Lease fencing across services. A worker runs a task under a claim with a lease epoch; the
//! epoch travels with every RPC the task makes (in the AMQP headers), and a callee refuses a
//! request whose epoch is older than one it has seen for the same task: a worker that lost
//! its lease (stopped, then resumed after another took the task over) can change nothing
//! through the agents either.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

/// A task's claim: the task and the lease epoch it was claimed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    pub task: domain::TaskId,
    pub epoch: i64,
}

tokio::task_local! {
    static FENCE: Fence;
}

const TASK_HEADER: &str = "x-hosting-task";
const EPOCH_HEADER: &str = "x-hosting-epoch";

/// Runs `work` under the task's claim: the RPCs it makes carry it.
pub async fn scope<F: Future>(fence: Fence, work: F) -> F::Output {
    FENCE.scope(fence, work).await
}

/// The claim the current work runs under, if any.
pub fn current() -> Option<Fence> {
    FENCE.try_with(|f| *f).ok()
}

/// Until when (on this host's monotonic clock) each claim this process holds is known to be
/// valid: its last successful heartbeat plus the lease. A process that was stopped (SIGSTOP,
/// a VM paused) past that moment finds its claim expired before it sends anything, even
/// before its heartbeat learns that another worker took the task over.
static LEASES: Mutex<Option<HashMap<Fence, Instant>>> = Mutex::new(None);

/// The claim is valid until `until`.
pub fn renewed(f: Fence, until: Instant) {
    if let Ok(mut map) = LEASES.lock() {
        map.get_or_insert_with(HashMap::new).insert(f, until);
    }
}

/// The task ended here: the claim is forgotten.
pub fn released(f: Fence) {
    if let Ok(mut map) = LEASES.lock() {
        if let Some(m) = map.as_mut() {
            m.remove(&f);
        }
    }
}

/// The claim's lease is lost: the work still running under it may do nothing more.
pub fn expired(f: Fence) {
    renewed(f, Instant::now());
}

/// Whether the current work may still act for its task: inside a claim this process holds,
/// while its lease is known to hold. Work done for another process's claim (an RPC handled
/// here) is that process's to fence, and the epoch it carries is checked where it lands.
pub fn still_held() -> bool {
    let Some(f) = current() else { return true };
    match LEASES.lock() {
        Ok(map) => map
            .as_ref()
            .and_then(|m| m.get(&f))
            .is_none_or(|until| Instant::now() < *until),
        Err(_) => false,
    }
}

pub(crate) fn insert(headers: &mut FieldTable) {
    if let Some(f) = current() {
        headers.insert(
            ShortString::from(TASK_HEADER),
            AMQPValue::LongLongInt(f.task.0),
        );
        headers.insert(
            ShortString::from(EPOCH_HEADER),
            AMQPValue::LongLongInt(f.epoch),
        );
    }
}

pub(crate) fn from_headers(headers: Option<&FieldTable>) -> Option<Fence> {
    let table = headers?.inner();
    let num = |k: &str| match table.get(k)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    };
    Some(Fence {
        task: domain::TaskId(num(TASK_HEADER)?),
        epoch: num(EPOCH_HEADER)?,
    })
}

/// The newest epoch a callee has seen per task (bounded: the oldest are forgotten).
#[derive(Default)]
pub(crate) struct Seen(Mutex<HashMap<i64, i64>>);

impl Seen {
    /// `Err(newest)` if `f` is older than the newest epoch seen for its task.
    pub(crate) fn admit(&self, f: Fence) -> Result<(), i64> {
        let Ok(mut map) = self.0.lock() else {
            return Ok(());
        };
        if map.len() > 50_000 {
            map.clear();
        }
        let newest = map.entry(f.task.0).or_insert(f.epoch);
        if f.epoch < *newest {
            return Err(*newest);
        }
        *newest = f.epoch;
        Ok(())
    }
}
