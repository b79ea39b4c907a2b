#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use mesh_testkit::postgres::PostgresServer;
use serde_json::json;

use super::*;

const Q: &str = "requestcount.instance.istio-system";

fn params(max: i64, window: &str) -> serde_json::Value {
    json!({"quotas": [{"name": Q, "maxAmount": max, "validDuration": window,
        "overrides": [{"dimensions": {"destination": "reviews"}, "maxAmount": 1}]}],
        "minDeduplicationDuration": "1s"})
}

fn dims(d: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("destination".to_string(), d.to_string())])
}

/// memquota's rules, on a database.
async fn windows_overrides_and_deduplication(url: &str) {
    let q = SqlQuota::open(url, &params(3, "1s")).await.unwrap();
    let t0 = 1_700_000_000_000i64;
    let web = dims("web");
    let mut granted = 0;
    for _ in 0..5 {
        granted += q.alloc(Q, &web, 1, false, "", t0).await.unwrap().granted;
    }
    assert_eq!(granted, 3);
    assert_eq!(
        q.alloc(Q, &web, 1, false, "", t0 + 999)
            .await
            .unwrap()
            .granted,
        0
    );
    let r = q.alloc(Q, &web, 2, false, "", t0 + 1000).await.unwrap();
    assert_eq!((r.granted, r.valid_duration), (2, Duration::from_secs(1)));
    assert_eq!(
        q.alloc(Q, &web, 5, true, "", t0 + 1000)
            .await
            .unwrap()
            .granted,
        1
    );
    // The override.
    assert_eq!(
        q.alloc(Q, &dims("reviews"), 1, false, "", t0)
            .await
            .unwrap()
            .granted,
        1
    );
    assert_eq!(
        q.alloc(Q, &dims("reviews"), 1, false, "", t0)
            .await
            .unwrap()
            .granted,
        0
    );
    // A retry with the same deduplication id takes nothing more.
    let other = dims("details");
    assert_eq!(
        q.alloc(Q, &other, 2, false, "r1", t0)
            .await
            .unwrap()
            .granted,
        2
    );
    assert_eq!(
        q.alloc(Q, &other, 2, false, "r1", t0 + 500)
            .await
            .unwrap()
            .granted,
        2
    );
    assert_eq!(
        q.alloc(Q, &other, 1, false, "r2", t0 + 500)
            .await
            .unwrap()
            .granted,
        1
    );
    assert_eq!(q.prune(t0 + 5000).await.unwrap(), 2);
    // Errors.
    assert!(matches!(
        q.alloc("nope", &other, 1, false, "", t0).await,
        Err(SqlQuotaError::Quota(QuotaError::Unknown(_)))
    ));
}

#[tokio::test]
async fn sqlite_follows_the_quota_rules() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quota.db").display());
    windows_overrides_and_deduplication(&url).await;
    // The count survives a reopen.
    let q = SqlQuota::open(&url, &params(3, "1h")).await.unwrap();
    let t = 1_700_000_000_000i64;
    assert_eq!(
        q.alloc(Q, &dims("x"), 3, false, "", t)
            .await
            .unwrap()
            .granted,
        3
    );
    let q = SqlQuota::open(&url, &params(3, "1h")).await.unwrap();
    assert_eq!(
        q.alloc(Q, &dims("x"), 1, false, "", t + 1)
            .await
            .unwrap()
            .granted,
        0
    );
}

#[tokio::test]
async fn postgres_follows_the_quota_rules() {
    let server = PostgresServer::start().unwrap();
    windows_overrides_and_deduplication(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_never_grant_more_than_the_limit() {
    let server = PostgresServer::start().unwrap();
    let a = SqlQuota::open(&server.url(), &params(150, "1h"))
        .await
        .unwrap();
    let b = SqlQuota::open(&server.url(), &params(150, "1h"))
        .await
        .unwrap();
    let t = 1_700_000_000_000i64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let q = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { q.alloc(Q, &dims("shared"), 1, false, "", t + i).await });
    }
    let mut granted = 0;
    while let Some(r) = tasks.join_next().await {
        granted += r.unwrap().unwrap().granted;
    }
    assert_eq!(granted, 150, "exactly the limit across both replicas");
}

#[tokio::test]
async fn bad_urls_and_params_are_refused() {
    assert!(matches!(
        SqlQuota::open("mysql://x", &params(1, "1s")).await,
        Err(SqlQuotaError::Url)
    ));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let e = SqlQuota::open(&url, &json!({"quotas": [{"name": "a", "maxAmount": -1}]}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sqlquota params"), "{e}");
}
