//! `make bench`, the cost of a site as a cell (its own unix user and php-fpm pool):
//!
//! - Install time: 50 example sites installed one after another; each install task's
//!   duration (started → finished), median and p90, and the share its pool and user steps
//!   take. With `HOSTING_BENCH_BASELINE_BIN_DIR` set to the binaries of an earlier build, the
//!   same installs are measured on them in the same run, for the comparison.
//! - php-fpm with 1,000 idle site pools on one host: 1,000 site users made by webconf, their
//!   pools written as webconf writes one (copied from a real site's, names changed), then
//!   `php-fpm -t` and a reload timed and the master's resident memory read, against the same
//!   with no extra pool.

use std::path::Path;
use std::time::{Duration, Instant};
use tests::{Stack, StackOptions, AMQP_URL};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const INSTALLS: usize = 50;
const POOLS: usize = 1000;

fn ts(v: &serde_json::Value, key: &str) -> OffsetDateTime {
    OffsetDateTime::parse(v[key].as_str().unwrap_or_default(), &Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Installs sites one at a time; their install durations in ms, sorted.
async fn installs(stack: &Stack, label: &str) -> Vec<f64> {
    stack.create_client("bench").await;
    let mut out = Vec::new();
    for i in 0..INSTALLS {
        let (_, task) = stack
            .create_site(&format!("{label}{i}.bench.example"), "bench", "example")
            .await;
        let done = stack
            .wait_task(
                task["id"].as_i64().unwrap_or_default(),
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(done["status"], "success", "{done}");
        out.push((ts(&done, "finished") - ts(&done, "started")).as_seconds_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    out
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn fpm_bin() -> String {
    let mut found: Vec<String> = std::fs::read_dir("/usr/sbin")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("php-fpm"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    format!(
        "/usr/sbin/{}",
        found.pop().unwrap_or_else(|| "php-fpm".into())
    )
}

/// `php-fpm -t` on the stack's configuration, as webconf runs it: seconds.
fn fpm_test(webconf: &Path) -> f64 {
    let started = Instant::now();
    let out = std::process::Command::new(fpm_bin())
        .arg("-y")
        .arg(webconf.join("php-fpm.conf"))
        .args(["-d", "opcache.validate_permission=1", "-t"])
        .output()
        .expect("php-fpm -t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn master_pid(webconf: &Path) -> Option<i32> {
    std::fs::read_to_string(webconf.join("php-fpm.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A reload as webconf does it (SIGUSR2, then the pid file's return): seconds.
async fn fpm_reload(webconf: &Path) -> f64 {
    let pid = master_pid(webconf).expect("php-fpm runs");
    let started = Instant::now();
    std::fs::remove_file(webconf.join("php-fpm.pid")).expect("the pid file");
    // SAFETY: a signal to the stack's own php-fpm master.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    while master_pid(webconf).is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "no reload");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed().as_secs_f64()
}

async fn webconf_call(
    rpc: &bus::RpcClient,
    request: contract::WebconfRequest,
) -> contract::WebconfReply {
    let local = domain::Name::parse("local").expect("a name");
    rpc.ask::<contract::WebconfRpc>(&local, &request, Duration::from_secs(120))
        .await
        .expect("webconf answers")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::spawn().await;
    eprintln!("installing {INSTALLS} sites one after another...");
    let times = installs(&stack, "cell").await;
    let baseline = match std::env::var("HOSTING_BENCH_BASELINE_BIN_DIR") {
        Ok(dir) => {
            eprintln!("the same on the baseline binaries in {dir}...");
            std::env::set_var("HOSTING_BIN_DIR", &dir);
            let old = Stack::spawn_with(StackOptions::default()).await;
            let t = installs(&old, "base").await;
            old.teardown().await;
            std::env::remove_var("HOSTING_BIN_DIR");
            Some(t)
        }
        Err(_) => None,
    };

    // 1,000 idle pools beside the stack's own.
    let webconf = stack.dir.join("webconf");
    let pools = webconf.join("pools");
    let template_name = tests::entries_in(&pools)
        .into_iter()
        .next()
        .expect("a site's pool");
    let template_user = template_name.trim_end_matches(".conf").to_owned();
    let template = std::fs::read_to_string(pools.join(&template_name))?;
    let bus = bus::Bus::new(AMQP_URL, contract::Topology::new(&stack.prefix), "bench");
    let rpc = bus::RpcClient::new(bus.clone());
    let base_pid = master_pid(&webconf).expect("php-fpm");
    let rss_before = rss_kib(base_pid);
    let test_before = fpm_test(&webconf);
    let reload_before = fpm_reload(&webconf).await;
    eprintln!("making {POOLS} site users and pools...");
    let made = Instant::now();
    let mut users = Vec::new();
    for i in 0..POOLS {
        let user = domain::SystemUser::parse(&format!("{}_b{i}", stack.prefix))?;
        let site = domain::SiteId(1_000_000 + i as i64);
        let reply = webconf_call(
            &rpc,
            contract::WebconfRequest::EnsureSiteUser {
                user: user.clone(),
                site,
            },
        )
        .await;
        let (uid, gid) = reply.ids.unwrap_or((0, 0));
        // The site's pool as webconf wrote it, for this user.
        let pool: String = template
            .replace(&template_user, user.as_str())
            .lines()
            .map(|l| match l.split_once(" = ") {
                Some(("user" | "listen.owner", _)) => {
                    format!("{} = {uid}\n", &l[..l.find(' ').unwrap_or(0)])
                }
                Some(("group", _)) => format!("group = {gid}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        std::fs::write(pools.join(format!("{user}.conf")), pool)?;
        users.push((user, site));
    }
    let users_secs = made.elapsed().as_secs_f64();
    let test_after = fpm_test(&webconf);
    let reload_after = fpm_reload(&webconf).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = master_pid(&webconf).expect("php-fpm");
    let rss_after = rss_kib(pid);
    let children = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_owned))
                })
                == Some(pid.to_string())
        })
        .count();

    for (user, _) in &users {
        std::fs::remove_file(pools.join(format!("{user}.conf")))?;
    }
    fpm_reload(&webconf).await;
    for (user, site) in users {
        webconf_call(
            &rpc,
            contract::WebconfRequest::RemoveSiteUser { user, site },
        )
        .await;
    }
    bus.close().await;

    println!("a site as a cell (its own unix user and php-fpm pool)");
    println!(
        "  install, one site at a time ({INSTALLS} sites): median {:.0} ms, p90 {:.0} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.9)
    );
    if let Some(b) = &baseline {
        println!(
            "  the same on the baseline binaries:          median {:.0} ms, p90 {:.0} ms ({:.2}x)",
            percentile(b, 0.5),
            percentile(b, 0.9),
            percentile(&times, 0.5) / percentile(b, 0.5)
        );
    }
    println!("  php-fpm with {INSTALLS} site pools, then with {POOLS} more idle ones:");
    println!(
        "    master RSS        {:.1} MiB -> {:.1} MiB ({children} processes under the master, none per idle pool)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!("    php-fpm -t        {test_before:.3} s -> {test_after:.3} s");
    println!("    reload            {reload_before:.3} s -> {reload_after:.3} s");
    println!(
        "    {POOLS} site users made by webconf in {users_secs:.1} s ({:.1} ms each)",
        users_secs * 1000.0 / POOLS as f64
    );
    stack.teardown().await;
    Ok(())
}
