#![allow(clippy::unwrap_used)]

use super::*;

fn queue(max: usize, wait: Duration) -> (Queue, mpsc::UnboundedReceiver<Batch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let q = Queue {
        tx,
        level: Arc::new(Level::default()),
        max,
        wait,
    };
    (q, rx)
}

fn bags(n: usize) -> Vec<AttributeBag> {
    (0..n).map(|_| AttributeBag::default()).collect()
}

#[tokio::test]
async fn room_is_held_until_filled_or_dropped() {
    let (q, mut rx) = queue(50, Duration::ZERO);
    let a = q.room_for(40).await.expect("an empty queue has room");
    assert!(
        q.room_for(20).await.is_none(),
        "40 held, 20 more is over 50"
    );
    drop(a);
    let a = q.room_for(40).await.expect("dropped room is given back");
    assert!(a.fill(bags(40)).is_ok());
    assert!(q.room_for(20).await.is_none(), "40 queued");
    assert!(q.room_for(10).await.is_some(), "exactly full still fits");
    let batch = rx.recv().await.unwrap();
    assert_eq!(q.level.taken(batch.bags.len()), 0);
    // A batch larger than the queue fits only an empty one.
    assert!(q.room_for(80).await.is_some());
}

#[tokio::test]
async fn a_batch_counted_differently_is_queued_at_its_real_size() {
    let (q, mut rx) = queue(50, Duration::ZERO);
    let room = q.room_for(10).await.unwrap();
    room.fill(bags(12)).unwrap();
    assert_eq!(q.level.queued.load(Ordering::Acquire), 12);
    let n = rx.recv().await.unwrap().bags.len();
    assert_eq!(q.level.taken(n), 0);
}

/// Waiters woken together by one batch taken out never share its room:
/// each is queued in turn, none refused, and the queue never overfills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_woken_together_each_get_their_own_room() {
    let (q, mut rx) = queue(50, Duration::from_secs(30));
    q.room_for(50).await.unwrap().fill(bags(50)).unwrap();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let q = q.clone();
        waiters.spawn(async move {
            let room = q.room_for(40).await.ok_or("refused")?;
            room.fill(bags(40)).map_err(|_| "closed")
        });
    }
    let worker = {
        let level = q.level.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..21 {
                let b = rx.recv().await.unwrap();
                most = most.max(level.queued.load(Ordering::Acquire));
                tokio::task::yield_now().await;
                level.taken(b.bags.len());
            }
            most
        })
    };
    while let Some(r) = waiters.join_next().await {
        assert_eq!(r.unwrap(), Ok(()));
    }
    assert!(worker.await.unwrap() <= 50, "the queue overfilled");
    assert_eq!(q.level.queued.load(Ordering::Acquire), 0);
}
