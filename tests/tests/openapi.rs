//! The OpenAPI document against the live API: served without a token at
//! `/api/v1/openapi.json`, and schemathesis (from PyPI; `make test` installs it under
//! `target/schemathesis`) generating requests from it, bounded and with a fixed seed: no
//! answer is a 5xx, none breaks its own schema or has an undocumented status or content type.

use std::time::Duration;
use tests::{http, Stack};

fn schemathesis() -> std::path::PathBuf {
    if let Ok(venv) = std::env::var("HOSTING_SCHEMATHESIS_VENV") {
        return std::path::PathBuf::from(venv).join("bin/schemathesis");
    }
    // As scripts/test-deps.sh resolves it: a relative CARGO_TARGET_DIR is the checkout's.
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(|d| tests::repo_root().join(d))
        .unwrap_or_else(|_| tests::repo_root().join("target"));
    target.join("schemathesis/bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_its_schema() {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} is missing: make test installs it (scripts/test-deps.sh)",
        bin.display()
    );
    let stack = Stack::spawn().await;
    // Something for the generated requests to find: a client and a site with a backup.
    stack.create_client("acme").await;
    let (site, task) = stack
        .create_site("shop.openapi.example", "acme", "example")
        .await;
    let done = stack
        .wait_task(tests::id(&task), Duration::from_secs(60))
        .await;
    stack.assert_success(&done).await;
    let backup = stack
        .run_site_task(tests::id(&site), serde_json::json!({"type": "backup"}))
        .await;
    stack.assert_success(&backup).await;

    let url = format!("{}/api/v1/openapi.json", stack.api);
    let doc = http::request("GET", &url, None, &[])
        .await
        .expect("the gateway answers");
    assert_eq!(doc.status, 200, "the document needs no token: {}", doc.body);
    let v: serde_json::Value = serde_json::from_str(&doc.body).expect("JSON");
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"].as_object().is_some_and(|p| p.len() >= 26), "{v}");

    let run = tokio::process::Command::new(&bin)
        .args(["run", &url])
        .args(["--url", &format!("{}/api/v1", stack.api)])
        .args(["-H", &format!("Authorization: Bearer {}", stack.token)])
        .args(["--max-examples", "25", "--seed", "20261201", "--workers", "1"])
        .args(["--phases", "coverage,fuzzing"])
        // Two cores shared with the rest of the suite: a slow answer is not a failure.
        .args(["--request-timeout", "30"])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .arg("--no-color")
        .current_dir(&stack.dir)
        .env("SCHEMATHESIS_HOOKS", "")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis ends within 15 minutes")
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(stack.dir.join("logs/schemathesis.log"), &report).expect("log");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{}",
        report
            .replace(&stack.token, "[token]")
            .lines()
            .rev()
            .take(120)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every operation in the document was tried ("Selected: 35/35", "Tested: 35").
    let number_after = |label: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| {
                rest.trim()
                    .split('/')
                    .next_back()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
    };
    let documented = v["paths"].as_object().map(|p| {
        p.values()
            .map(|i| i.as_object().map_or(0, |o| o.len()))
            .sum::<usize>()
    });
    assert_eq!(
        number_after("Selected:"),
        documented,
        "{}",
        report.replace(&stack.token, "[token]")
    );
    assert_eq!(
        number_after("Tested:"),
        documented,
        "{}",
        report.replace(&stack.token, "[token]")
    );
    stack.teardown().await;
}
