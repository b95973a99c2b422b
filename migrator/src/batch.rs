//! `migrate-sites`: every enabled site of a platform moved to a target platform, one child
//! migrate task per site, at most `concurrency` at a time, and no new ones started once
//! `failure_budget` of them failed. Each child is an ordinary migrate (its own saga, its own
//! rollback); the batch only starts them, watches them and sums up.

use crate::Migrator;
use domain::{SiteStatus, TaskId, TaskStatus, TaskType};
use store::{NewTask, SiteFilter, Task};
use worker::{Outcome, TaskLog};

pub async fn run(m: &Migrator, task: &Task, log: &TaskLog) -> Outcome {
    match batch(m, task, log).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Error(format!("{e:#}")),
    }
}

async fn batch(m: &Migrator, task: &Task, log: &TaskLog) -> anyhow::Result<Outcome> {
    let source = task
        .platform
        .ok_or_else(|| anyhow::anyhow!("a migrate-sites task without a platform"))?;
    let contract::TaskArgs::MigrateSites(args) = task.parsed_args()? else {
        anyhow::bail!("a migrate-sites task without its target");
    };
    let target = args.target;
    let concurrency = args.concurrency.max(1) as usize;
    let budget = args.failure_budget.max(1) as usize;

    // Children made by an earlier run of this task (the migrator restarted) are watched,
    // not made again.
    let existing: Vec<Task> = m
        .store
        .tasks(&store::TaskFilter {
            parent: Some(task.id),
            limit: 100_000,
            ..Default::default()
        })
        .await?;
    let sites = m
        .store
        .sites(&SiteFilter {
            platform: Some(source),
            status: Some(SiteStatus::Enabled),
            ..Default::default()
        })
        .await?;
    let mut pending: Vec<_> = sites
        .iter()
        .filter(|s| !existing.iter().any(|t| t.site == Some(s.id)))
        .map(|s| s.id)
        .collect();
    pending.reverse(); // pop() takes them in id order
    let mut active: Vec<TaskId> = existing
        .iter()
        .filter(|t| !t.status.is_terminal())
        .map(|t| t.id)
        .collect();
    let mut done: Vec<Task> = existing
        .into_iter()
        .filter(|t| t.status.is_terminal())
        .collect();
    log.info(format!(
        "moving {} sites to platform {target}, {concurrency} at a time, stopping after {budget} failures",
        pending.len() + active.len() + done.len()
    ))
    .await;

    loop {
        let failed = done
            .iter()
            .filter(|t| t.status == TaskStatus::Error)
            .count();
        while active.len() < concurrency && failed < budget {
            let Some(site) = pending.pop() else { break };
            let mut child = NewTask::for_site(
                TaskType::Migrate,
                site,
                contract::TaskArgs::Move(contract::MoveArgs {
                    platform: target,
                    domain: None,
                    db_server: args.db_server,
                    clone_site: None,
                }),
                &task.requested_by,
            );
            child.parent = Some(task.id);
            let t = m.store.create_task(&child).await?;
            active.push(t.id);
        }
        if active.is_empty() {
            break;
        }
        tokio::time::sleep(m.settings.batch_poll).await;
        let mut still = Vec::with_capacity(active.len());
        for id in active {
            let t = m.store.task(id).await?;
            if t.status.is_terminal() {
                let site = t.site.map(|s| s.to_string()).unwrap_or_default();
                match t.status {
                    TaskStatus::Error => {
                        log.warn(format!(
                            "site {site}: task {} failed: {}",
                            t.id,
                            t.error.clone().unwrap_or_default()
                        ))
                        .await
                    }
                    _ => {
                        log.info(format!("site {site}: migrated (task {})", t.id))
                            .await
                    }
                }
                done.push(t);
            } else {
                still.push(id);
            }
        }
        active = still;
    }

    let failed: Vec<_> = done
        .iter()
        .filter(|t| t.status == TaskStatus::Error)
        .filter_map(|t| t.site)
        .collect();
    let migrated = done.len() - failed.len();
    let summary = serde_json::json!({
        "migrated": migrated,
        "failed": failed,
        "not_started": pending.len(),
    });
    log.info(format!(
        "{migrated} migrated, {} failed, {} not started",
        failed.len(),
        pending.len()
    ))
    .await;
    Ok(if failed.is_empty() {
        Outcome::Success(Some(summary))
    } else if pending.is_empty() {
        Outcome::Warning(format!(
            "{} of {} sites could not be migrated (each was put back): {summary}",
            failed.len(),
            done.len()
        ))
    } else {
        Outcome::Error(format!(
            "stopped after {} failures (the failure budget); {} sites were not started: {summary}",
            failed.len(),
            pending.len()
        ))
    })
}
