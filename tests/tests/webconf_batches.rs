//! Webconf applies vhost changes together: many at once give a handful of reloads, each
//! request answered only when its vhost is live; a configuration nginx refuses is rolled back
//! and reported with nginx's own words, and what served before still serves.

use contract::{Vhost, VhostMode, WebconfRequest};
use domain::{DomainName, HostPath, Name};
use std::time::Duration;
use tests::Stack;

const CHANGES: usize = 100;

fn generation(stack: &Stack) -> u64 {
    std::fs::read_to_string(stack.dir.join("webconf/generation.conf"))
        .unwrap_or_default()
        .split("return 200 \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn vhost(domain: &str, root: &HostPath, redirect: &str) -> WebconfRequest {
    WebconfRequest::WriteVhost(Box::new(Vhost {
        domain: DomainName::parse(domain).expect("a domain"),
        aliases: vec![],
        document_root: root.clone(),
        site_dir: root.clone(),
        front_controller: "index.php".into(),
        mode: VhostMode::Disabled {
            redirect: redirect.into(),
        },
        pool: None,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_vhost_changes_at_once_make_a_handful_of_reloads() {
    let stack = Stack::spawn().await;
    let bus = bus::Bus::new(
        &stack.amqp_url,
        contract::Topology::new(&stack.prefix),
        "test-webconf-batches",
    );
    let rpc = bus::RpcClient::new(bus.clone());
    let local = Name::parse("local").expect("a name");
    let root_dir = stack.dir.join("batch-root");
    std::fs::create_dir_all(&root_dir).expect("a document root");
    let root = HostPath::parse(&root_dir.to_string_lossy()).expect("a path");
    let redirect = format!("{}/disabled/batch", stack.api);
    let call = |request: WebconfRequest| {
        let (rpc, local) = (&rpc, &local);
        async move {
            rpc.ask::<contract::WebconfRpc>(local, &request, Duration::from_secs(120))
                .await
        }
    };

    let before = generation(&stack);
    let domains: Vec<String> = (0..CHANGES)
        .map(|i| format!("c{i}.batch.example"))
        .collect();
    let replies =
        futures_util::future::join_all(domains.iter().map(|d| call(vhost(d, &root, &redirect))))
            .await;
    for (d, r) in domains.iter().zip(&replies) {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{d}: {e}"));
        assert!(r.changed, "{d}");
    }
    let reloads = generation(&stack) - before;
    eprintln!("{CHANGES} changes at once: {reloads} reloads");
    assert!(
        (1..=10).contains(&reloads),
        "{CHANGES} changes made {reloads} reloads"
    );
    // Every change is live: each answered only once nginx served it.
    for d in &domains {
        let r = stack.page(d, "/").await;
        assert_eq!(r.status, 302, "{d}");
        assert_eq!(r.header("location"), Some(redirect.as_str()), "{d}");
    }
    // Written again unchanged: nothing to reload.
    let again = call(vhost(&domains[0], &root, &redirect))
        .await
        .expect("a reply");
    assert!(!again.changed);

    // A file nginx refuses, left by someone else: the next change cannot load. It is rolled
    // back and refused with nginx's reason, and the running configuration keeps serving.
    let broken = stack.dir.join("webconf/vhosts/zz-broken.conf");
    std::fs::write(&broken, "server { listen 127.0.0.1:99999; }\n").expect("a broken file");
    let refused = call(vhost("late.batch.example", &root, &redirect)).await;
    let why = refused.expect_err("a change nginx cannot load").to_string();
    assert!(why.contains("refused") && why.contains("99999"), "{why}");
    assert!(
        !stack.vhost_path("late.batch.example").exists(),
        "the refused change was left on disk"
    );
    assert_eq!(stack.page(&domains[0], "/").await.status, 302);
    assert_eq!(stack.page("late.batch.example", "/").await.status, 404);
    std::fs::remove_file(&broken).expect("the broken file removed");

    // Removals are coalesced the same way.
    let before = generation(&stack);
    let removals = futures_util::future::join_all(domains.iter().map(|d| {
        call(WebconfRequest::RemoveVhost {
            domain: DomainName::parse(d).expect("a domain"),
        })
    }))
    .await;
    assert!(removals.iter().all(|r| r.is_ok()), "{removals:?}");
    let reloads = generation(&stack) - before;
    assert!(
        (1..=10).contains(&reloads),
        "{reloads} reloads for the removals"
    );
    for d in &domains {
        assert_eq!(stack.page(d, "/").await.status, 404, "{d}");
    }
    bus.close().await;
    stack.teardown().await;
}
