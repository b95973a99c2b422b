//! The README's walk-through, run as written: every `sh` block of its "Walk-through" section,
//! in order, in one `bash -euo pipefail`, against a stack of the test's own. The only changes
//! are the addresses (the test stack's gateway and nginx instead of `make up`'s ports); the
//! directory it runs in is laid out as a checkout after `make up` (`target/debug`,
//! `platforms/`, `.stack/admin.token`, `.stack/platforms/` allowed on the local web server).
//! Each `grep` in it checks what the command before it should have done, so a step that
//! did not wait for its task, or a stale line, fails here.

use serde_json::json;
use std::time::Duration;
use tests::{bin_dir, repo_root, Stack};

/// The `sh` blocks of the README section `## Walk-through` (up to the next `## `).
fn walkthrough_blocks(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Walk-through\n")
        .expect("the README has a Walk-through section");
    let rest = &readme[start + 1..];
    let section = match rest[3..].find("\n## ") {
        Some(end) => &rest[..end + 3],
        None => rest,
    };
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let blocks = walkthrough_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "the walk-through has the hostctl and the curl parts"
    );
    let script = blocks.join("\n");
    assert!(script.contains("hostctl site add") && script.contains("--wait"));
    assert!(
        script.contains("http://127.0.0.1:8080") && script.contains("http://127.0.0.1:8088"),
        "the walk-through names make up's addresses"
    );

    let stack = Stack::spawn().await;
    let checkout = stack.dir.join("checkout");
    std::fs::create_dir_all(checkout.join("target")).expect("checkout");
    std::fs::create_dir_all(checkout.join(".stack/platforms")).expect(".stack");
    std::os::unix::fs::symlink(bin_dir(), checkout.join("target/debug")).expect("target/debug");
    std::os::unix::fs::symlink(repo_root().join("platforms"), checkout.join("platforms"))
        .expect("platforms");
    std::fs::write(checkout.join(".stack/admin.token"), &stack.token).expect("token");
    // make up lets platforms live in .stack/platforms: so does this stack's web server.
    let (_, servers) = stack.call("GET", "/servers", None).await;
    let web = servers
        .as_array()
        .and_then(|s| s.iter().find(|s| s["kind"] == "web"))
        .expect("the local web server")
        .clone();
    let mut dirs: Vec<serde_json::Value> =
        web["platform_dirs"].as_array().cloned().unwrap_or_default();
    dirs.push(json!(checkout.join(".stack/platforms").to_string_lossy()));
    let (status, r) = stack
        .call(
            "PATCH",
            &format!("/servers/{}", web["id"]),
            Some(json!({"platform_dirs": dirs})),
        )
        .await;
    assert_eq!(status, 200, "{r}");

    let script = script.replace("http://127.0.0.1:8080", &stack.api).replace(
        "http://127.0.0.1:8088",
        &format!("http://127.0.0.1:{}", stack.http_port),
    );
    std::fs::write(stack.dir.join("walkthrough.sh"), &script).expect("script");
    let run = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-x"])
        .arg(stack.dir.join("walkthrough.sh"))
        .current_dir(&checkout)
        .env_remove("HOSTCTL_URL")
        .env_remove("HOSTCTL_TOKEN")
        .env_remove("HOSTCTL_CONFIG")
        .env("HOME", &checkout)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the walk-through ends within 10 minutes")
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    std::fs::write(
        stack.dir.join("logs/walkthrough.log"),
        format!("{stdout}\n---\n{stderr}"),
    )
    .expect("log");
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.status.success(),
        "the walk-through stopped ({:?}):\n--- stdout (end)\n{}\n--- stderr (end)\n{}",
        out.status.code(),
        tail(&stdout),
        tail(&stderr)
    );
    // What it left is what it said: the renamed site and the batch-moved one on the new
    // platform, the clone deleted.
    for (domain, status, platform) in [
        ("www.acme.example", "enabled", "example-1.1"),
        ("blog.acme.example", "enabled", "example-1.1"),
        ("api.acme.example", "enabled", "example"),
    ] {
        let (_, sites) = stack
            .call("GET", &format!("/sites?domain={domain}"), None)
            .await;
        assert_eq!(sites[0]["status"], status, "{domain}: {sites}");
        assert_eq!(sites[0]["platform"], platform, "{domain}: {sites}");
    }
    let (_, gone) = stack
        .call("GET", "/sites?domain=staging.acme.example", None)
        .await;
    assert_eq!(gone[0]["status"], "deleted", "{gone}");
    stack.teardown().await;
}
