//! Group commit for SQLite: the hot writes (a login's new person and session, a refresh's
//! rotation) queue for one task that runs whatever has queued up in one transaction, each
//! write in a savepoint of its own, and commits once.
//!
//! - Atomicity: a write that fails, or decides to keep nothing, is rolled back to its
//!   savepoint; the others in the batch are unaffected. When the commit fails, every write
//!   of the batch is told so (none of them is kept).
//! - Isolation: the writes of a batch run one after another on the one writer connection,
//!   as they would one transaction each; a write sees those before it.
//! - Durability: a caller hears back only after the commit.
//! - Cancellation: a write runs on the queue's task, whatever happens to the caller once it
//!   is queued; a caller dropped before that leaves nothing. Each batch runs in a task of its
//!   own, so a write that panics fails its batch (rolled back), not the queue.
//! - One writer: a batch holds the writer pool's one connection from `BEGIN IMMEDIATE` to
//!   `COMMIT`; the writes outside the queue take the same connection between batches.
//!
//! Memory: the queue holds at most [`QUEUE`] writes; further callers wait for room.

use std::any::Any as StdAny;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::{Acquire as _, AnyConnection, AnyPool, Connection as _};
use tokio::sync::{mpsc, oneshot};

use super::auth_cache::AuthCache;
use super::store_error;
use crate::store::StoreError;

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

struct Request {
    job: Job,
    /// Whether the write may change what a cached access token means.
    invalidates: bool,
    reply: oneshot::Sender<Result<Box<dyn StdAny + Send>, StoreError>>,
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
    /// Starts the queue's task on `writer` (a pool of one connection).
    pub(crate) fn start(
        writer: AnyPool,
        cache: Option<Arc<AuthCache>>,
        after_commit: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx, cache, after_commit));
        Self { queue }
    }

    /// Queues a write and waits for the commit of its batch.
    pub(crate) async fn write(
        &self,
        invalidates: bool,
        job: Job,
    ) -> Result<Box<dyn StdAny + Send>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request {
                job,
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

async fn run(
    writer: AnyPool,
    mut rx: mpsc::Receiver<Request>,
    cache: Option<Arc<AuthCache>>,
    after_commit: Arc<dyn Fn() + Send + Sync>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let (writer, cache, after_commit) = (writer.clone(), cache.clone(), after_commit.clone());
        // A panic ends this batch's task (its callers hear that the write did not finish, the
        // transaction is rolled back with the dropped connection), not the queue.
        let _ = tokio::spawn(async move {
            let invalidates = requests.iter().any(|r| r.invalidates);
            let answers = run_batch(&writer, requests).await;
            if invalidates {
                if let Some(cache) = &cache {
                    cache.invalidate();
                }
            }
            after_commit();
            for (reply, answer) in answers {
                // A caller that went away does not need the answer.
                let _ = reply.send(answer);
            }
        })
        .await;
    }
}

type Answer = Result<Box<dyn StdAny + Send>, StoreError>;

async fn run_batch(
    writer: &AnyPool,
    requests: Vec<Request>,
) -> Vec<(oneshot::Sender<Answer>, Answer)> {
    let mut conn = match writer.acquire().await {
        Ok(conn) => conn,
        Err(err) => return fail_all(requests.into_iter().map(|r| r.reply).collect(), err),
    };
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(err) => return fail_all(requests.into_iter().map(|r| r.reply).collect(), err),
    };
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        let answer = run_one(&mut tx, request.job).await;
        answers.push((request.reply, answer));
    }
    match tx.commit().await {
        Ok(()) => answers,
        // Nothing of the batch is kept: each write hears so.
        Err(err) => fail_all(answers.into_iter().map(|(reply, _)| reply).collect(), err),
    }
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

/// One write in its savepoint: released when it keeps its changes, rolled back otherwise.
async fn run_one(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job: Job) -> Answer {
    let mut savepoint = tx.begin().await.map_err(store_error)?;
    match job(&mut savepoint).await {
        Ok((value, true)) => {
            savepoint.commit().await.map_err(store_error)?;
            Ok(value)
        }
        Ok((value, false)) => {
            savepoint.rollback().await.map_err(store_error)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = savepoint.rollback().await {
                tracing::debug!(error = %rollback, "rollback to a savepoint after a failed write");
            }
            Err(err)
        }
    }
}
