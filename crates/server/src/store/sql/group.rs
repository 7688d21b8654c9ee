//! Group commit for SQLite: the hot writes (a login's new person and session, a refresh's
//! rotation) queue for one task that runs whatever has queued up in one transaction, each
//! write in a savepoint of its own (a batch of one write needs none), and commits once.
//!
//! - Atomicity: a write that fails, or decides to keep nothing, is rolled back to its
//!   savepoint; the others in the batch are unaffected. When the commit fails, every write
//!   of the batch is told so (none of them is kept).
//! - Isolation: the writes of a batch run one after another on the one writer connection,
//!   as they would one transaction each; a write sees those before it.
//! - Durability: a caller hears back only after the commit.
//! - Cancellation: a write runs on the queue's task, whatever happens to the caller once it
//!   is queued; a caller dropped before that leaves nothing. A write that panics fails its
//!   batch (rolled back), not the queue.
//! - One writer: a batch holds the writer pool's one connection from `BEGIN IMMEDIATE` to
//!   `COMMIT`, and the queue keeps it for the next batch while writes keep queuing (for
//!   [`HOLD_AT_MOST`] at most); the writes outside the queue take the same connection in
//!   between.
//! - Hand-offs: each statement sent to a SQLite connection is a hand-off to its thread and
//!   back. The new sessions of a batch (one per login) are written together, one multi-row
//!   statement per table in one text; a batch of nothing else has its `BEGIN` and `COMMIT`
//!   in that text too, so it costs one hand-off whatever its size. Should that fail, the
//!   sessions are written again one by one, each in its savepoint.
//! - Checkpoints: the WAL is copied into the database file on a reading connection after
//!   the writes ([`checkpoints`]), not by the writer in the middle of a commit.
//!
//! Memory: the queue holds at most [`QUEUE`] writes; further callers wait for room.

use std::any::Any as StdAny;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire as _, Any, AnyConnection, AnyPool, Connection as _, Executor as _};
use tokio::sync::{Notify, mpsc, oneshot};

use super::auth_cache::AuthCache;
use super::sessions::{NewSession, insert_sessions, insert_sessions_in};
use super::store_error;
use crate::store::StoreError;

/// How long the queue keeps the writer's connection from one batch to the next while writes
/// keep queuing. Given back to the pool after each batch, the connection is tested there (a
/// ping: a hand-off to SQLite's thread and back) before the next batch can have it: at half
/// the peak login rate that wait was 0.1 ms at the median and 0.9 ms at the 99th percentile,
/// on every batch. Given back at least this often, so that the writes outside the queue
/// (which wait for the same connection) wait no longer than this and a batch.
const HOLD_AT_MOST: Duration = Duration::from_millis(20);

/// Writes waiting at most; beyond, callers wait for room.
const QUEUE: usize = 1024;

/// Writes in one transaction at most (a bound on how long one commit keeps the others).
const BATCH: usize = 256;

/// What a write gives back: its value, and whether its changes are kept (`false` rolls its
/// savepoint back, e.g. a rotation that found the token already used).
pub(crate) type Outcome = (Box<dyn StdAny + Send>, bool);

/// One write: runs on the writer connection, inside its savepoint.
pub(crate) type Job = Box<
    dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<Outcome, StoreError>> + Send,
>;

/// Makes a [`Job`] of a closure (naming the connection's lifetime for the compiler).
pub(crate) fn job<F>(f: F) -> Job
where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<Outcome, StoreError>>
        + Send
        + 'static,
{
    Box::new(f)
}

type Answer = Result<Box<dyn StdAny + Send>, StoreError>;

struct Request {
    write: Write,
    /// Whether the write may change what a cached access token means.
    invalidates: bool,
    reply: oneshot::Sender<Answer>,
}

/// What a queued write does.
enum Write {
    /// Anything, in a savepoint of its own.
    Job(Job),
    /// A login's new session: a batch writes all of its new sessions in one execution.
    Session(Box<NewSession>),
}

/// The queue's sending side. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    queue: mpsc::Sender<Request>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter").finish_non_exhaustive()
    }
}

impl GroupWriter {
    /// Starts the queue's task on `writer` (a pool of one connection), and the checkpoints
    /// of its WAL on `readers` (see [`checkpoints`]).
    pub(crate) fn start(
        writer: AnyPool,
        readers: AnyPool,
        cache: Option<Arc<AuthCache>>,
        after_commit: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let written = Arc::new(Notify::new());
        tokio::spawn(checkpoints(readers, queue.downgrade(), written.clone()));
        tokio::spawn(run(writer, rx, cache, after_commit, written));
        Self { queue }
    }

    /// Queues a write and waits for the commit of its batch.
    pub(crate) async fn write(
        &self,
        invalidates: bool,
        job: Job,
    ) -> Result<Box<dyn StdAny + Send>, StoreError> {
        self.queue_write(invalidates, Write::Job(job)).await
    }

    /// Queues a new session (and its tokens) and waits for the commit of its batch. It
    /// changes nothing a cached access token means.
    pub(crate) async fn insert_session(&self, new: NewSession) -> Result<(), StoreError> {
        self.queue_write(false, Write::Session(Box::new(new)))
            .await
            .map(drop)
    }

    async fn queue_write(&self, invalidates: bool, write: Write) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request {
                write,
                invalidates,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Other(anyhow::anyhow!("a database write did not finish"))
}

/// How soon after a commit the WAL is checkpointed (see [`checkpoints`]).
///
/// Small checkpoints often: a checkpoint syncs the WAL and the database file, and while the
/// file system syncs, the writer's own writes to the WAL slow down. Measured on SQLite at half
/// the peak login rate, the p99 of a login was about 10 ms with checkpoints every 10 ms, 13 ms
/// every 25 ms, 15 ms every 50 ms and 17–26 ms every 100 ms, with the same peak. With the
/// database file synced after each checkpoint, 3 ms against 10 ms over eight runs each: the
/// p99 with 4 connections lower in every run (3.7–5.5 ms against 4.8–6.4, and once 43), at
/// half the peak lower in five of eight (4.7–7.3 ms against 5.7–7.3, and once 17), the peak
/// unchanged, for about 10% more CPU per login below the peak (hot pages are copied more
/// often). A checkpoint starts only after the last one ended, and only when something was
/// committed since.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(3);

/// Copies what the writer committed from the WAL into the database file (a passive
/// checkpoint), on a reading connection, [`CHECKPOINT_AFTER`] after a batch, then syncs the
/// file. Left to itself, SQLite checkpoints on the connection that commits, every 1000 pages
/// of WAL: the writer then writes and syncs the database file while every write queued
/// behind it waits (milliseconds, every few hundred logins). A passive checkpoint waits for
/// nobody, and readers and the writer go on meanwhile. The writer's own checkpoint stays as a
/// net, at a larger WAL ([`SQLITE_WRITER_AUTOCHECKPOINT`](super::SQLITE_WRITER_AUTOCHECKPOINT)).
///
/// The sync: SQLite syncs the database file only at the end of a checkpoint that reached
/// the end of the WAL. Under a steady stream of commits a passive checkpoint seldom does (the
/// writer has committed more meanwhile), so the pages it copies stay dirty in the operating
/// system's cache until one does, most often the writer's own checkpoint in the middle of a
/// commit, which then syncs all of them at once: measured on SQLite at the peak login rate,
/// 9 ms of `fdatasync` on the writer about once a second, with every queued login waiting
/// behind it (the p99 of a login at half the peak was 12–15 ms). Synced here after each
/// checkpoint, off the writer, what is left for that last sync takes about 1 ms (the p99 at
/// half the peak 6 ms). Syncing only makes what SQLite wrote durable sooner; it changes
/// nothing SQLite relies on.
///
/// Ends with the queue.
async fn checkpoints(readers: AnyPool, queue: mpsc::WeakSender<Request>, written: Arc<Notify>) {
    let file = database_file(&readers).await;
    let mut failing = false;
    loop {
        // A commit since the last checkpoint began (or the queue's end) leaves a permit.
        written.notified().await;
        if queue.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(CHECKPOINT_AFTER).await;
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&readers)
            .await
        {
            tracing::debug!(error = %err, "a checkpoint of the WAL failed");
        }
        if let Some(file) = &file {
            let file = file.clone();
            let synced = match tokio::task::spawn_blocking(move || file.sync_data()).await {
                Ok(result) => result,
                Err(err) => Err(std::io::Error::other(err)),
            };
            // Told once when syncing starts failing (SQLite's own writes will fail too), and
            // once when it works again, not every few milliseconds in between.
            match synced {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("syncing the database file works again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "syncing the database file failed");
                }
                Err(_) => {}
            }
        }
    }
}

/// The main database's file, opened once more (read-only) for [`checkpoints`] to sync; `None`
/// for a database in memory, or when it cannot be opened (then SQLite's own syncs are all).
async fn database_file(readers: &AnyPool) -> Option<Arc<std::fs::File>> {
    let path: String =
        match sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(readers)
            .await
        {
            Ok(path) => path,
            Err(err) => {
                tracing::debug!(error = %err, "the database file's path is unknown");
                return None;
            }
        };
    if path.is_empty() {
        return None;
    }
    match std::fs::File::open(&path) {
        Ok(file) => Some(Arc::new(file)),
        Err(err) => {
            tracing::warn!(error = %err, path, "the database file does not open for syncing");
            None
        }
    }
}

async fn run(
    writer: AnyPool,
    mut rx: mpsc::Receiver<Request>,
    cache: Option<Arc<AuthCache>>,
    after_commit: Arc<dyn Fn() + Send + Sync>,
    written: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // The writer's connection, kept from one batch to the next while writes keep
        // queuing (see [`HOLD_AT_MOST`]).
        let mut held: Option<PoolConnection<Any>> = None;
        let since = Instant::now();
        loop {
            let requests = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let conn = held.take();
            // A panic ends this batch (its callers hear that the write did not finish, the
            // transaction is rolled back with the dropped connection), not the queue. Run
            // here rather than in a task of its own: one hand-off between tasks fewer.
            let batch_run = async {
                let invalidates = requests.iter().any(|r| r.invalidates);
                let (answers, conn) = run_batch(&writer, conn, requests).await;
                if invalidates {
                    if let Some(cache) = &cache {
                        cache.invalidate();
                    }
                }
                written.notify_one();
                after_commit();
                for (reply, answer) in answers {
                    // A caller that went away does not need the answer.
                    let _ = reply.send(answer);
                }
                conn
            };
            held = AssertUnwindSafe(batch_run)
                .catch_unwind()
                .await
                .ok()
                .flatten();
            if held.is_none() || since.elapsed() >= HOLD_AT_MOST {
                break;
            }
            while batch.len() < BATCH
                && let Ok(request) = rx.try_recv()
            {
                batch.push(request);
            }
            if batch.is_empty() {
                break;
            }
        }
    }
    // The checkpoints end with the queue.
    written.notify_one();
}

/// Runs a batch on `held` (or on the writer's connection, once free), and gives the
/// connection back for the next batch when the batch ended as it began, outside any
/// transaction, with every write answered `Ok` (after anything else it goes back to the pool,
/// which tests it).
async fn run_batch(
    writer: &AnyPool,
    held: Option<PoolConnection<Any>>,
    requests: Vec<Request>,
) -> (
    Vec<(oneshot::Sender<Answer>, Answer)>,
    Option<PoolConnection<Any>>,
) {
    let mut conn = match held {
        Some(conn) => conn,
        None => match writer.acquire().await {
            Ok(conn) => conn,
            Err(err) => {
                return (
                    fail_all(requests.into_iter().map(|r| r.reply).collect(), err),
                    None,
                );
            }
        },
    };
    let (answers, clean) = run_batch_on(&mut conn, requests).await;
    let clean = clean && answers.iter().all(|(_, answer)| answer.is_ok());
    (answers, clean.then_some(conn))
}

/// [`run_batch`] on the connection: the answers, and whether the batch took its fast path
/// or committed its transaction.
async fn run_batch_on(
    conn: &mut PoolConnection<Any>,
    requests: Vec<Request>,
) -> (Vec<(oneshot::Sender<Answer>, Answer)>, bool) {
    let mut answers = Vec::with_capacity(requests.len());
    let mut jobs = Vec::with_capacity(requests.len());
    let (mut sessions, mut session_replies) = (Vec::new(), Vec::new());
    for request in requests {
        match request.write {
            Write::Job(job) => jobs.push((job, request.reply)),
            Write::Session(new) => {
                sessions.push(*new);
                session_replies.push(request.reply);
            }
        }
    }
    // A batch of one write (what a quiet moment queues): the transaction is its savepoint,
    // two hand-offs to the connection's thread fewer.
    if sessions.is_empty()
        && jobs.len() == 1
        && let Some((job, reply)) = jobs.pop()
    {
        return (vec![(reply, run_alone(conn, job).await)], true);
    }
    // A batch of new sessions only (logins of returning users): its transaction, its
    // inserts and its commit in one execution, one hand-off to the connection's thread.
    let mut together = !sessions.is_empty();
    let mut clean = true;
    if jobs.is_empty() && together {
        match insert_sessions_committed(conn, &sessions).await {
            Ok(()) => {
                let answers = session_replies.into_iter().map(|r| (r, unit())).collect();
                return (answers, true);
            }
            Err(err) => {
                tracing::debug!(error = %err, "new sessions of a batch written one by one");
                together = false;
                // The connection may be closed once the batch is over.
                clean = false;
            }
        }
    }
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(err) => {
            let replies = jobs.into_iter().map(|(_, reply)| reply);
            return (
                fail_all(replies.chain(session_replies).collect(), err),
                false,
            );
        }
    };
    // The new sessions first, all in one execution. No write of the batch can depend on
    // another's (no caller has heard of its write yet), so the order within it is free.
    if together && insert_sessions_together(&mut tx, &sessions).await {
        answers.extend(session_replies.into_iter().map(|reply| (reply, unit())));
    } else {
        // Each in a savepoint of its own: only what fails fails.
        for (new, reply) in sessions.iter().zip(session_replies) {
            answers.push((reply, insert_session_alone(&mut tx, new).await));
        }
    }
    for (job, reply) in jobs {
        let answer = run_one(&mut tx, job).await;
        answers.push((reply, answer));
    }
    match tx.commit().await {
        Ok(()) => (answers, clean),
        // Nothing of the batch is kept: each write hears so.
        Err(err) => (
            fail_all(answers.into_iter().map(|(reply, _)| reply).collect(), err),
            false,
        ),
    }
}

/// Writes new sessions in a transaction of their own, begun and committed in the same
/// execution as the inserts. On an error nothing is kept: the transaction is rolled back, and
/// a connection that might still be inside it (the rollback failed, or this future was
/// dropped mid-way) is closed instead of going back to the pool.
async fn insert_sessions_committed(
    conn: &mut PoolConnection<Any>,
    sessions: &[NewSession],
) -> Result<(), sqlx::Error> {
    /// Closes the connection unless disarmed.
    struct CloseUnlessDone<'a> {
        conn: &'a mut PoolConnection<Any>,
        done: bool,
    }
    impl Drop for CloseUnlessDone<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.conn.close_on_drop();
            }
        }
    }
    let mut guard = CloseUnlessDone { conn, done: false };
    let result = insert_sessions_in(guard.conn, sessions, true).await;
    // After an error, SQLite may have ended the transaction itself (or never begun it), in
    // which case the rollback fails harmlessly; the connection is closed all the same.
    guard.done = match &result {
        Ok(()) => true,
        Err(_) => guard.conn.execute("ROLLBACK").await.is_ok(),
    };
    result
}

/// The answer of a write that gives nothing back.
fn unit() -> Answer {
    Ok(Box::new(()))
}

/// The same failure for every write of a batch.
fn fail_all(
    replies: Vec<oneshot::Sender<Answer>>,
    err: sqlx::Error,
) -> Vec<(oneshot::Sender<Answer>, Answer)> {
    let message = err.to_string();
    let first = store_error(err);
    let unavailable = matches!(first, StoreError::Unavailable { .. });
    let mut first = Some(first);
    replies
        .into_iter()
        .map(|reply| {
            let err = first.take().unwrap_or_else(|| {
                let source = anyhow::anyhow!("{message}");
                if unavailable {
                    StoreError::Unavailable {
                        store: "database",
                        source,
                    }
                } else {
                    StoreError::Other(source)
                }
            });
            (reply, Err(err))
        })
        .collect()
}

/// New sessions in one savepoint: `false` (nothing of them kept) when they are to be
/// written one by one instead.
async fn insert_sessions_together(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sessions: &[NewSession],
) -> bool {
    match insert_sessions_saved(tx, sessions).await {
        Ok(_) => true,
        Err(err) => {
            tracing::debug!(error = %err, "new sessions of a batch written one by one");
            false
        }
    }
}

/// One new session in its savepoint (see [`run_one`]).
async fn insert_session_alone(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    new: &NewSession,
) -> Answer {
    insert_sessions_saved(tx, std::slice::from_ref(new)).await
}

/// New sessions in a savepoint, released when they are written, rolled back otherwise.
async fn insert_sessions_saved(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sessions: &[NewSession],
) -> Answer {
    let mut savepoint = tx.begin().await.map_err(store_error)?;
    let outcome = insert_sessions(&mut savepoint, sessions)
        .await
        .map_err(store_error)
        .and_then(|()| unit().map(|value| (value, true)));
    settle(savepoint, outcome).await
}

/// The one write of a batch in the batch's transaction: committed when it keeps its
/// changes, rolled back otherwise (as [`run_one`] does with its savepoint).
async fn run_alone(conn: &mut PoolConnection<Any>, job: Job) -> Answer {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(store_error)?;
    let outcome = job(&mut tx).await;
    settle(tx, outcome).await
}

/// One write in its savepoint: released when it keeps its changes, rolled back otherwise.
async fn run_one(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job: Job) -> Answer {
    let mut savepoint = tx.begin().await.map_err(store_error)?;
    let outcome = job(&mut savepoint).await;
    settle(savepoint, outcome).await
}

/// Ends a transaction (or a savepoint) by its write's outcome: committed when the write
/// keeps its changes, rolled back when it does not or failed; gives the write's value.
pub(crate) async fn settle<T>(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    outcome: Result<(T, bool), StoreError>,
) -> Result<T, StoreError> {
    match outcome {
        Ok((value, true)) => {
            tx.commit().await.map_err(store_error)?;
            Ok(value)
        }
        Ok((value, false)) => {
            tx.rollback().await.map_err(store_error)?;
            Ok(value)
        }
        Err(err) => {
            // The write's error is the one to report; a failed rollback only a log line.
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback after a failed write");
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    async fn pool(url: &str) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(url).await.unwrap()
    }

    #[tokio::test]
    async fn the_file_synced_after_checkpoints_is_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.db");
        let readers = pool(&format!("sqlite://{}?mode=rwc", path.display())).await;
        let file = database_file(&readers).await.expect("a database in a file");
        let (opened, on_disk) = (file.metadata().unwrap(), path.metadata().unwrap());
        assert_eq!((opened.dev(), opened.ino()), (on_disk.dev(), on_disk.ino()));
        file.sync_data().unwrap();
    }

    #[tokio::test]
    async fn the_built_in_sqlite_is_built_with_the_workspace_flags() {
        // LIBSQLITE3_FLAGS in .cargo/config.toml, which also makes SQLite sync with fdatasync
        // (that one has no trace in the compile options).
        let readers = pool("sqlite::memory:").await;
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&readers)
            .await
            .unwrap();
        assert!(
            options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    /// Inserts `x` into `t`.
    async fn insert_row(conn: &mut AnyConnection, x: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO t (x) VALUES (?)")
            .bind(x)
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(store_error)
    }

    /// A write that inserts `x`, then keeps it, keeps nothing, or fails.
    fn insert(x: i64, keep: bool, fail: bool) -> Job {
        job(move |conn| {
            Box::pin(async move {
                insert_row(conn, x).await?;
                if fail {
                    return Err(StoreError::Other(anyhow::anyhow!(
                        "failed after its insert"
                    )));
                }
                Ok((Box::new(()) as Box<dyn StdAny + Send>, keep))
            })
        })
    }

    #[tokio::test]
    async fn a_write_that_keeps_nothing_or_fails_leaves_nothing_alone_or_beside_others() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, readers) = writer_and_readers(&dir).await;
        let group = GroupWriter::start(writer, readers.clone(), None, Arc::new(|| {}));
        // One at a time: each is a batch of its own.
        group.write(false, insert(1, false, false)).await.unwrap();
        group.write(false, insert(2, true, true)).await.unwrap_err();
        group.write(false, insert(3, true, false)).await.unwrap();
        // Queued together: most often one batch.
        let (kept_nothing, failed, kept) = tokio::join!(
            group.write(false, insert(4, false, false)),
            group.write(false, insert(5, true, true)),
            group.write(false, insert(6, true, false)),
        );
        kept_nothing.unwrap();
        failed.unwrap_err();
        kept.unwrap();
        assert_eq!(rows(&readers).await, [3, 6]);
    }

    /// A writer pool of one connection (as the store's) and a pool to read with, on a new
    /// database in WAL mode with a table `t (x)`.
    async fn writer_and_readers(dir: &tempfile::TempDir) -> (AnyPool, AnyPool) {
        sqlx::any::install_default_drivers();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("wxauth.db").display()
        );
        let writer = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .execute(&writer)
            .await
            .unwrap();
        (writer, pool(&url).await)
    }

    async fn rows(pool: &AnyPool) -> Vec<i64> {
        sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_its_batch_and_the_queue_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, readers) = writer_and_readers(&dir).await;
        let group = GroupWriter::start(writer.clone(), readers.clone(), None, Arc::new(|| {}));
        let panics = |x: i64| {
            job(move |conn| {
                Box::pin(async move {
                    insert_row(conn, x).await?;
                    panic!("a write that panics after its insert");
                })
            })
        };
        // Alone, then queued beside a write that would have been kept: the whole batch fails.
        group.write(false, panics(1)).await.unwrap_err();
        group.write(false, insert(2, true, false)).await.unwrap();
        let (panicked, beside) = tokio::join!(
            group.write(false, panics(3)),
            group.write(false, insert(4, true, false)),
        );
        panicked.unwrap_err();
        // Beside it in the same batch it failed too (nothing kept); in a batch of its own it
        // was kept.
        let four_kept = beside.is_ok();
        group.write(false, insert(5, true, false)).await.unwrap();
        let expected: Vec<i64> = [2]
            .into_iter()
            .chain(four_kept.then_some(4))
            .chain([5])
            .collect();
        assert_eq!(rows(&readers).await, expected);
        // Nothing left open on the writer: a write outside the queue goes through.
        sqlx::query("INSERT INTO t (x) VALUES (6)")
            .execute(&writer)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_write_outside_the_queue_gets_the_writer_while_the_queue_stays_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, readers) = writer_and_readers(&dir).await;
        let group = GroupWriter::start(writer.clone(), readers.clone(), None, Arc::new(|| {}));
        // Writes that each take a millisecond, queued faster than that for up to 3 s: the
        // queue is never empty when a batch ends.
        let pause = || {
            job(|conn| {
                Box::pin(async move {
                    sqlx::query("SELECT 1")
                        .execute(&mut *conn)
                        .await
                        .map_err(store_error)?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok((Box::new(()) as Box<dyn StdAny + Send>, false))
                })
            })
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = tokio::spawn({
            let (group, stop) = (group.clone(), stop.clone());
            async move {
                let until = Instant::now() + Duration::from_secs(3);
                let mut writes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                    for _ in 0..2 {
                        let (group, write) = (group.clone(), pause());
                        writes.push(tokio::spawn(async move { group.write(false, write).await }));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                writes
            }
        });
        tokio::time::sleep(HOLD_AT_MOST * 5).await;
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(&writer)
            .await
            .unwrap();
        let queue_still_busy = !producer.is_finished();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = producer.await.unwrap();
        let queued = writes.len();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert!(
            queue_still_busy,
            "the write outside waited for the queue to empty"
        );
        assert!(queued > 10, "the queue was not kept busy: {queued} writes");
        assert_eq!(rows(&readers).await, [1]);
    }

    #[tokio::test]
    async fn a_database_in_memory_has_no_file_to_sync() {
        let readers = pool("sqlite::memory:").await;
        assert!(database_file(&readers).await.is_none());
    }
}
