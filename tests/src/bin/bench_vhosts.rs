//! `make bench`: one web server with 10,000 vhosts.
//!
//! 10,000 vhosts of the shape webconf writes for a PHP site are put in the stack's vhost
//! directory and loaded; then, beside the floor of a bare `nginx -t` of that same
//! configuration measured in the same run: a vhost change through webconf (write, check,
//! reload, answered once live), 100 changes at once (how many reloads they make), whether
//! nginx warns about its server-names hash, and the memory of nginx's master and workers
//! before, with the vhosts, and once they are removed.

use contract::{Vhost, VhostMode, WebconfRequest};
use domain::{DomainName, HostPath, Name};
use std::path::Path;
use std::time::{Duration, Instant};
use tests::Stack;

const VHOSTS: usize = 10_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Resident memory (MiB) of nginx's master (from its pid file) and its workers.
fn nginx_rss(dir: &Path) -> f64 {
    let Some(master) = std::fs::read_to_string(dir.join("nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return f64::NAN;
    };
    let rss_kib = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut total = rss_kib(master);
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.filter_map(|e| e.ok()) {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            if parent == Some(master) {
                total += rss_kib(pid);
            }
        }
    }
    total as f64 / 1024.0
}

fn vhost_text(i: usize, port: u16, root: &str, params: &str, sockets: &str) -> String {
    format!(
        "# bench vhost {i}
server {{
    listen 127.0.0.1:{port};
    server_name s{i}.vhosts.example www.s{i}.vhosts.example;
    root {root};
    index index.php;
    location ~ /\\. {{ deny all; return 404; }}
    location ^~ /files/ {{
        alias {root}/sites/s{i}/files/;
        disable_symlinks if_not_owner;
        location ~* \\.(php[0-9]?|phtml|phar|pht|phps|cgi|pl|py|sh)$ {{ return 403; }}
        location ~ /\\. {{ return 404; }}
    }}
    location / {{ try_files $uri $uri/ /index.php$is_args$args; }}
    location ~ \\.php$ {{
        try_files $uri =404;
        include {params};
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HOSTING_SITE_DIR {root}/sites/s{i};
        fastcgi_param HOSTING_SITE_DOMAIN s{i}.vhosts.example;
        set $hosting_php_socket {sockets}/s{i}.sock;
        fastcgi_pass unix:$hosting_php_socket;
    }}
}}
"
    )
}

fn nginx_t(dir: &Path, quiet: bool) -> (f64, String) {
    let t0 = Instant::now();
    let mut cmd = std::process::Command::new("/usr/sbin/nginx");
    cmd.arg("-t");
    if quiet {
        cmd.arg("-q");
    }
    let out = cmd
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(format!("{}/", dir.display()))
        .arg("-e")
        .arg(dir.join("logs/error.log"))
        .output()
        .expect("nginx -t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        t0.elapsed().as_secs_f64() * 1000.0,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::spawn().await;
    let dir = stack.dir.join("webconf");
    let bus = bus::Bus::new(
        &stack.amqp_url,
        contract::Topology::new(&stack.prefix),
        "bench-vhosts",
    );
    let rpc = bus::RpcClient::new(bus.clone());
    let local = Name::parse("local")?;
    let root_dir = stack.dir.join("bench-root");
    std::fs::create_dir_all(&root_dir)?;
    let root = HostPath::parse(&root_dir.to_string_lossy())?;
    let redirect = format!("{}/disabled/bench", stack.api);
    let change = |domain: String, remove: bool| {
        let (rpc, local, root, redirect) = (&rpc, &local, root.clone(), redirect.clone());
        async move {
            let domain = DomainName::parse(&domain).expect("a domain");
            let request = if remove {
                WebconfRequest::RemoveVhost { domain }
            } else {
                WebconfRequest::WriteVhost(Box::new(Vhost {
                    domain,
                    aliases: vec![],
                    document_root: root.clone(),
                    site_dir: root,
                    front_controller: "index.php".into(),
                    mode: VhostMode::Disabled { redirect },
                    pool: None,
                }))
            };
            let t0 = Instant::now();
            rpc.ask::<contract::WebconfRpc>(local, &request, Duration::from_secs(600))
                .await
                .expect("webconf's answer");
            t0.elapsed().as_secs_f64() * 1000.0
        }
    };
    let generation = || {
        std::fs::read_to_string(dir.join("generation.conf"))
            .unwrap_or_default()
            .split("return 200 \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
    };

    // Where it starts: cold (as webconf started it) and warm (after a change, so its workers
    // are ones a reload made, as they are at the end).
    let rss_cold = nginx_rss(&dir);
    change("warm.vhosts.example".into(), false).await;
    change("warm.vhosts.example".into(), true).await;
    let rss_start = nginx_rss(&dir);
    let (t_empty, _) = nginx_t(&dir, true);
    eprintln!("writing {VHOSTS} vhosts...");
    let params = dir.join("fastcgi_params");
    let sockets = dir.join("sockets");
    for i in 0..VHOSTS {
        std::fs::write(
            dir.join("vhosts").join(format!("s{i}.vhosts.example.conf")),
            vhost_text(
                i,
                stack.http_port,
                &root_dir.to_string_lossy(),
                &params.to_string_lossy(),
                &sockets.to_string_lossy(),
            ),
        )?;
    }
    // The first change loads them all.
    let first_load = change("first.vhosts.example".into(), false).await;
    let (_, warnings) = nginx_t(&dir, false);
    let hash_warning = warnings.contains("server_names_hash");
    let bare: Vec<f64> = (0..5).map(|_| nginx_t(&dir, true).0).collect();
    let bare = median(bare);
    let mut changes = Vec::new();
    for i in 0..5 {
        changes.push(change(format!("one{i}.vhosts.example"), false).await);
    }
    let one = median(changes);
    let rss_full = nginx_rss(&dir);

    let before = generation();
    let t0 = Instant::now();
    let at_once: Vec<f64> = futures_util::future::join_all(
        (0..100).map(|i| change(format!("many{i}.vhosts.example"), false)),
    )
    .await;
    let hundred_secs = t0.elapsed().as_secs_f64();
    let reloads = generation() - before;
    let slowest = at_once.iter().copied().fold(0.0, f64::max);

    eprintln!("removing them...");
    for i in 0..VHOSTS {
        let _ = std::fs::remove_file(dir.join("vhosts").join(format!("s{i}.vhosts.example.conf")));
    }
    change("first.vhosts.example".into(), true).await;
    // The old master and its workers leave once their connections are done.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = nginx_rss(&dir);
    bus.close().await;
    stack.teardown().await;

    println!("\n== one web server with {VHOSTS} vhosts (nginx, managed by webconf)");
    println!(
        "floor: bare nginx -t of the same configuration:  {bare:.0} ms  (empty: {t_empty:.0} ms)"
    );
    println!(
        "a vhost change through webconf (write, check, reload, live):  {one:.0} ms = {:.2}x the floor   (loading all {VHOSTS}: {first_load:.0} ms)",
        one / bare
    );
    println!("100 changes at once:  {reloads} reloads, all live in {hundred_secs:.1} s (slowest answer {slowest:.0} ms)");
    println!(
        "server-names hash warning from nginx -t:  {}",
        if hash_warning { "yes" } else { "none" }
    );
    println!(
        "nginx master + workers RSS:  {rss_cold:.1} MiB at start ({rss_start:.1} MiB after a first reload), {rss_full:.1} MiB with {VHOSTS} vhosts, {rss_after:.1} MiB after removing them ({:.2}x the start after a reload, {:.2}x cold)",
        rss_after / rss_start,
        rss_after / rss_cold
    );
    Ok(())
}
