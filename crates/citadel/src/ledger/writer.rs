//! Group commit: one task writes every recorded certificate.
//!
//! `record` hands its row and a oneshot to the writer over a bounded channel.
//! The writer takes everything queued (up to [`MAX_BATCH`] rows), inserts it
//! in one transaction with multi-row INSERTs, commits, and only then answers
//! each waiter, so one fsync covers a whole batch. A duplicate serial is
//! skipped by `ON CONFLICT DO NOTHING` and reported to its caller alone; any
//! other failure fails every waiter of that batch, none of whose rows is written.
//!
//! On a SQLite file, commits never checkpoint (`wal_autocheckpoint=0`): copying
//! the write-ahead log into the database, with its fsync of the database file, is
//! done by a separate task every [`CHECKPOINT_EVERY`] on another connection
//! (`PASSIVE`: it never blocks the writer), so a commit waits for one WAL fsync and
//! nothing else.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot};

use super::backend::{Pool, with_pool};
use super::schema::{BINDS_PER_ROW, INSERT_PREFIX, INSERT_SUFFIX};
use super::{IssuedCertificate, LedgerError};

/// Most rows written in one transaction.
pub(super) const MAX_BATCH: usize = 1000;
/// Rows that may wait for the writer before `record` itself waits.
const QUEUE_CAPACITY: usize = 8 * MAX_BATCH;

/// How often the write-ahead log of a SQLite ledger is checkpointed.
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A certificate to write, stamped with the time it was recorded.
#[derive(Debug)]
pub(super) struct Row {
    /// The certificate.
    pub(super) certificate: IssuedCertificate,
    /// Unix seconds when `record` was called.
    pub(super) issued_at: i64,
}

/// A row and the caller waiting for its commit.
struct Pending {
    row: Row,
    reply: oneshot::Sender<Result<(), LedgerError>>,
}

/// The sending side of the writer, shared by every clone of a `Ledger`.
#[derive(Debug)]
pub(super) struct Writer {
    queue: mpsc::Sender<Pending>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer task on `pool`; it ends once every `Writer` handle is dropped.
    pub(super) fn spawn(pool: Pool) -> Writer {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let commits = Arc::new(AtomicU64::new(0));
        if let Pool::Sqlite(sqlite) = &pool {
            tokio::spawn(checkpoints(sqlite.clone(), queue.downgrade()));
        }
        tokio::spawn(run(pool, receiver, Arc::clone(&commits)));
        Writer { queue, commits }
    }

    /// Queues `row` and waits until its batch is committed.
    pub(super) async fn submit(&self, row: Row) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { row, reply })
            .await
            .map_err(|_| LedgerError::WriterGone)?;
        answer.await.map_err(|_| LedgerError::WriterGone)?
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

async fn run(pool: Pool, mut receiver: mpsc::Receiver<Pending>, commits: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit_batch(&pool, std::mem::take(&mut batch), &commits).await;
    }
    tracing::debug!("certificate ledger writer stopped");
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_EVERY`] until the writer is
/// gone. A failed checkpoint is retried at the next tick; the log only grows
/// meanwhile, nothing is lost.
async fn checkpoints(pool: sqlx::SqlitePool, writer: mpsc::WeakSender<Pending>) {
    let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if writer.upgrade().is_none() {
            break;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(%error, "certificate ledger checkpoint failed; will retry");
        }
    }
}

/// Writes one batch and answers its waiters.
async fn commit_batch(pool: &Pool, batch: Vec<Pending>, commits: &AtomicU64) {
    let rows: Vec<&Row> = batch.iter().map(|pending| &pending.row).collect();
    match insert(pool, &rows).await {
        Ok(mut inserted) => {
            commits.fetch_add(1, Ordering::Relaxed);
            for Pending { row, reply } in batch {
                // The first row with a serial is the one inserted; repeats are duplicates.
                let result = if inserted.remove(&row.certificate.serial) {
                    Ok(())
                } else {
                    Err(LedgerError::DuplicateSerial {
                        serial: row.certificate.serial,
                    })
                };
                // A caller that stopped waiting no longer needs the answer.
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            tracing::warn!(rows = batch.len(), %error, "certificate ledger write failed");
            let error = Arc::new(error);
            for Pending { reply, .. } in batch {
                let _ = reply.send(Err(LedgerError::Write(Arc::clone(&error))));
            }
        }
    }
}

/// Inserts the rows in one transaction and returns the serials actually inserted.
async fn insert(pool: &Pool, rows: &[&Row]) -> Result<HashSet<String>, sqlx::Error> {
    let per_statement = rows_per_statement(pool.bind_limit());
    with_pool!(pool, |pool| {
        let mut tx = pool.begin().await?;
        let mut inserted = HashSet::with_capacity(rows.len());
        for chunk in rows.chunks(per_statement) {
            let mut insert = QueryBuilder::new(INSERT_PREFIX);
            insert.push_values(chunk, |mut values, row| {
                let certificate = &row.certificate;
                values
                    .push_bind(certificate.serial.as_str())
                    .push_bind(certificate.identity.as_str())
                    .push_bind(certificate.not_before)
                    .push_bind(certificate.not_after)
                    .push_bind(certificate.fingerprint.as_str())
                    .push_bind(certificate.issuer_fingerprint.as_str())
                    .push_bind(row.issued_at);
            });
            insert.push(INSERT_SUFFIX);
            // Each batch size is its own statement text: not worth caching.
            let serials: Vec<String> = insert
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            inserted.extend(serials);
        }
        tx.commit().await?;
        Ok(inserted)
    })
}

/// Rows per INSERT so that its bind parameters stay within `bind_limit`.
fn rows_per_statement(bind_limit: usize) -> usize {
    (bind_limit / BINDS_PER_ROW).clamp(1, MAX_BATCH)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn statements_stay_under_bind_limits() {
        for limit in [32_766, 65_535, 999, 7, 1] {
            let rows = rows_per_statement(limit);
            assert!((1..=MAX_BATCH).contains(&rows), "{limit}: {rows}");
            assert!(
                rows * BINDS_PER_ROW <= limit.max(BINDS_PER_ROW),
                "{limit}: {rows}"
            );
        }
        assert_eq!(rows_per_statement(999), 142);
    }

    #[tokio::test]
    async fn record_fails_instead_of_hanging_when_the_writer_is_gone() {
        let (queue, receiver) = mpsc::channel(1);
        drop(receiver);
        let writer = Writer {
            queue,
            commits: Arc::new(AtomicU64::new(0)),
        };
        let row = Row {
            certificate: IssuedCertificate {
                serial: "01".to_owned(),
                identity: "spiffe://cluster.local/ns/default/sa/a".to_owned(),
                not_before: 0,
                not_after: 1,
                fingerprint: "0".repeat(64),
                issuer_fingerprint: "0".repeat(64),
            },
            issued_at: 0,
        };
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), writer.submit(row))
            .await
            .unwrap();
        assert!(matches!(result, Err(LedgerError::WriterGone)), "{result:?}");
    }

    #[tokio::test]
    async fn waiters_get_an_error_when_the_writer_drops_their_batch() {
        let (queue, mut receiver) = mpsc::channel::<Pending>(1);
        let writer = Writer {
            queue,
            commits: Arc::new(AtomicU64::new(0)),
        };
        // A writer that takes the row and dies before answering.
        tokio::spawn(async move { drop(receiver.recv().await) });
        let row = Row {
            certificate: IssuedCertificate {
                serial: "02".to_owned(),
                identity: "spiffe://cluster.local/ns/default/sa/a".to_owned(),
                not_before: 0,
                not_after: 1,
                fingerprint: "0".repeat(64),
                issuer_fingerprint: "0".repeat(64),
            },
            issued_at: 0,
        };
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), writer.submit(row))
            .await
            .unwrap();
        assert!(matches!(result, Err(LedgerError::WriterGone)), "{result:?}");
    }
}
