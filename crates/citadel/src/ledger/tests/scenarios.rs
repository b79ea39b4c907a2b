//! The behaviours every backend must show; `on_each_backend!` runs each on SQLite and PostgreSQL.

use super::*;

pub(super) async fn record_then_get(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let cert = mk_cert("0a1b2c");
    let before = unix_now();
    ledger.record(cert.clone()).await.unwrap();
    let entry = ledger.get("0a1b2c").await.unwrap().unwrap();
    assert_eq!(entry.certificate, cert);
    assert!(entry.issued_at >= before && entry.issued_at <= unix_now() + 1);
    assert_eq!(entry.revoked, None);
    assert_eq!(
        ledger.get("0A:1B:2C").await.unwrap().unwrap().certificate,
        cert
    );
    assert_eq!(ledger.get("ffff").await.unwrap(), None);
    assert!(!ledger.is_revoked("0a1b2c").await.unwrap());
}

pub(super) async fn durable_across_reopen(fixture: &Fixture) {
    let ledger = fixture.open().await;
    // One certificate, compared with itself: a second one made later could
    // straddle a second boundary.
    let certificate = mk_cert("01");
    ledger.record(certificate.clone()).await.unwrap();
    ledger
        .revoke("01", RevocationReason::Superseded)
        .await
        .unwrap();
    drop(ledger);
    let reopened = fixture.open().await;
    let entry = reopened.get("01").await.unwrap().unwrap();
    assert_eq!(entry.certificate, certificate);
    assert_eq!(
        entry.revoked.map(|revocation| revocation.reason),
        Some(RevocationReason::Superseded)
    );
}

pub(super) async fn concurrent_records_are_group_committed(fixture: &Fixture) {
    let ledger = fixture.open().await;
    record_concurrently(&ledger, "c0", 2000).await;
    let entries = ledger.list(None, 5000).await.unwrap();
    assert_eq!(entries.len(), 2000);
    for i in [0, 999, 1999] {
        assert!(ledger.get(&format!("c0{i:06x}")).await.unwrap().is_some());
    }
    let commits = ledger.commits();
    assert!(
        (1..2000).contains(&commits),
        "2000 records took {commits} transactions"
    );
}

pub(super) async fn duplicate_serial_is_refused_and_original_kept(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let original = mk_cert("d1");
    ledger.record(original.clone()).await.unwrap();
    let impostor = mk_cert_for("d1", "spiffe://cluster.local/ns/evil/sa/impostor");
    let error = ledger.record(impostor).await.unwrap_err();
    assert!(
        matches!(&error, LedgerError::DuplicateSerial { serial } if serial == "d1"),
        "{error:?}"
    );
    assert_eq!(
        ledger.get("d1").await.unwrap().unwrap().certificate,
        original
    );
}

pub(super) async fn duplicates_within_one_batch_fail_only_their_callers(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_cert("e0")).await.unwrap();
    let certs = vec![
        mk_cert("e1"),
        mk_cert_for("e0", "spiffe://cluster.local/ns/a/sa/old"),
        mk_cert_for("e2", "spiffe://cluster.local/ns/a/sa/first"),
        mk_cert_for("e2", "spiffe://cluster.local/ns/a/sa/second"),
        mk_cert("e3"),
    ];
    let results = join_all(certs.into_iter().map(|cert| ledger.record(cert))).await;
    let outcome: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(outcome, [true, false, true, false, true], "{results:?}");
    for result in &results {
        if let Err(error) = result {
            assert!(
                matches!(error, LedgerError::DuplicateSerial { .. }),
                "{error:?}"
            );
        }
    }
    let e2 = ledger.get("e2").await.unwrap().unwrap();
    assert_eq!(
        e2.certificate.identity,
        "spiffe://cluster.local/ns/a/sa/first"
    );
    assert_eq!(ledger.list(None, 10).await.unwrap().len(), 4);
}

pub(super) async fn revoking_twice_keeps_the_first_revocation(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_cert("0f")).await.unwrap();
    let first = ledger
        .revoke("0f", RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert_eq!(first.serial, "0f");
    assert_eq!(first.reason, RevocationReason::KeyCompromise);
    assert!(ledger.is_revoked("0f").await.unwrap());
    let second = ledger
        .revoke("0F", RevocationReason::Superseded)
        .await
        .unwrap();
    assert_eq!(second, first);
    let entry = ledger.get("0f").await.unwrap().unwrap();
    assert_eq!(entry.revoked, Some(first.clone()));
    assert_eq!(ledger.revocations().await.unwrap(), vec![first]);
}

pub(super) async fn revoking_an_unknown_serial_fails(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let error = ledger
        .revoke("abcdef", RevocationReason::Unspecified)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LedgerError::UnknownSerial { serial } if serial == "abcdef"),
        "{error:?}"
    );
    assert!(!ledger.is_revoked("abcdef").await.unwrap());
    assert!(ledger.revocations().await.unwrap().is_empty());
}

pub(super) async fn revocations_skip_expired_and_sort_by_serial(fixture: &Fixture) {
    let ledger = fixture.open().await;
    for serial in ["30", "10", "20", "40"] {
        ledger.record(mk_cert(serial)).await.unwrap();
    }
    ledger.record(mk_expired_cert("05")).await.unwrap();
    for serial in ["30", "10", "05"] {
        ledger
            .revoke(serial, RevocationReason::CessationOfOperation)
            .await
            .unwrap();
    }
    let serials: Vec<String> = ledger
        .revocations()
        .await
        .unwrap()
        .into_iter()
        .map(|revocation| revocation.serial)
        .collect();
    assert_eq!(serials, ["10", "30"]);
    assert!(ledger.is_revoked("05").await.unwrap());
}

pub(super) async fn list_is_newest_first_and_filters_by_identity(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let backend = "spiffe://cluster.local/ns/default/sa/backend";
    for (serial, identity) in [
        ("a1", frontend),
        ("a2", backend),
        ("a3", frontend),
        ("a4", frontend),
    ] {
        ledger.record(mk_cert_for(serial, identity)).await.unwrap();
    }
    let serials = |entries: Vec<LedgerEntry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|entry| entry.certificate.serial)
            .collect()
    };
    assert_eq!(
        serials(ledger.list(None, 10).await.unwrap()),
        ["a4", "a3", "a2", "a1"]
    );
    assert_eq!(
        serials(ledger.list(Some(frontend), 2).await.unwrap()),
        ["a4", "a3"]
    );
    assert_eq!(
        serials(ledger.list(Some(backend), 10).await.unwrap()),
        ["a2"]
    );
    assert!(
        ledger
            .list(Some("spiffe://x/none"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(ledger.list(None, 0).await.unwrap().is_empty());
}

pub(super) async fn prune_deletes_only_expired_entries(fixture: &Fixture) {
    let ledger = fixture.open().await;
    ledger.record(mk_expired_cert("b1")).await.unwrap();
    ledger.record(mk_expired_cert("b2")).await.unwrap();
    ledger.record(mk_cert("b3")).await.unwrap();
    assert_eq!(ledger.prune_expired(unix_now()).await.unwrap(), 2);
    assert_eq!(ledger.get("b1").await.unwrap(), None);
    assert!(ledger.get("b3").await.unwrap().is_some());
    assert_eq!(ledger.prune_expired(unix_now()).await.unwrap(), 0);
}

pub(super) async fn malformed_certificates_are_refused(fixture: &Fixture) {
    let ledger = fixture.open().await;
    let bad = [
        IssuedCertificate {
            serial: "0A:1B".to_owned(),
            ..mk_cert("x")
        },
        IssuedCertificate {
            serial: String::new(),
            ..mk_cert("x")
        },
        IssuedCertificate {
            serial: "1".repeat(41),
            ..mk_cert("x")
        },
        IssuedCertificate {
            identity: "https://example.com".to_owned(),
            ..mk_cert("11")
        },
        IssuedCertificate {
            fingerprint: "AB".repeat(32),
            ..mk_cert("12")
        },
        IssuedCertificate {
            issuer_fingerprint: "ab".to_owned(),
            ..mk_cert("13")
        },
        IssuedCertificate {
            not_before: 10,
            not_after: 5,
            ..mk_cert("14")
        },
    ];
    for cert in bad {
        let error = ledger.record(cert.clone()).await.unwrap_err();
        assert!(
            matches!(error, LedgerError::InvalidCertificate { .. }),
            "{cert:?}: {error:?}"
        );
    }
    assert!(ledger.list(None, 10).await.unwrap().is_empty());
}

pub(super) async fn a_second_replica_sees_revocations(fixture: &Fixture) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    first.record(mk_cert("71")).await.unwrap();
    assert!(!second.is_revoked("71").await.unwrap());
    let revocation = first
        .revoke("71", RevocationReason::KeyCompromise)
        .await
        .unwrap();
    assert!(second.is_revoked("71").await.unwrap());
    assert_eq!(
        second.revocations().await.unwrap(),
        vec![revocation.clone()]
    );
    // The second replica's later revocation does not replace the first one's.
    assert_eq!(
        second
            .revoke("71", RevocationReason::Unspecified)
            .await
            .unwrap(),
        revocation
    );
}

pub(super) async fn two_replicas_record_concurrently(fixture: &Fixture) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    tokio::join!(
        record_concurrently(&first, "1a", 1000),
        record_concurrently(&second, "2b", 1000),
    );
    assert_eq!(first.list(None, 5000).await.unwrap().len(), 2000);
    assert_eq!(second.list(None, 5000).await.unwrap().len(), 2000);
}

pub(super) async fn replicas_may_open_a_fresh_database_at_once(fixture: &Fixture) {
    let opens = join_all((0..4).map(|_| Ledger::open(&fixture.url)));
    let ledgers = tokio::time::timeout(BOUND, opens).await.unwrap();
    for ledger in ledgers {
        ledger
            .unwrap()
            .record(mk_cert(&format!("{:x}", fastrand::u64(..))))
            .await
            .unwrap();
    }
}

pub(super) async fn a_failed_batch_fails_its_callers_and_the_writer_goes_on(fixture: &Fixture) {
    let ledger = fixture.open().await;
    with_pool!(&ledger.inner.pool, |pool| {
        sqlx::query("DROP TABLE citadel_certificates")
            .execute(pool)
            .await
            .unwrap();
    });
    let records = (0..20).map(|i| ledger.record(mk_cert(&format!("f{i:02x}"))));
    for result in join_all(records).await {
        assert!(matches!(result, Err(LedgerError::Write(_))), "{result:?}");
    }
    // Opening again recreates the schema; the first handle's writer still works.
    drop(fixture.open().await);
    ledger.record(mk_cert("f00")).await.unwrap();
    assert_eq!(ledger.list(None, 100).await.unwrap().len(), 1);
}
