//! `wxauth rotate-data-key`: every sealed value the stores hold, sealed again under the current
//! data key, so that the previous keys can be dropped from the configuration.
//!
//! Each value is replaced only if it is still the one read (compare and set), so a running
//! service that changes it meanwhile (a new session_key, a new WeChat token) is never undone;
//! what it writes is sealed with the current key already. Rows are read in pages, so a large
//! sessions table is never held in memory.

use redis::AsyncCommands as _;
use sqlx::Row as _;

use super::Stores;
use super::redis::RedisSessionStore;
use super::sql::SqlStore;
use crate::seal::DataKey;

/// What happened to the sealed values of one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Where (a table, or a kind of Redis key).
    pub place: String,
    /// Sealed again under the current key.
    pub resealed: u64,
    /// Sealed under the current key already.
    pub current: u64,
    /// Opened by no configured key (left as they are; what they held is lost).
    pub unreadable: u64,
}

impl Resealed {
    fn new(place: impl Into<String>) -> Self {
        Self {
            place: place.into(),
            ..Self::default()
        }
    }
}

/// What a sealed value is bound to, from the id of what holds it.
type Context = fn(&str) -> String;

/// A table column of sealed values: its key column, and the context each value is bound to.
struct Sealed {
    table: &'static str,
    id: &'static str,
    column: &'static str,
    context: Context,
}

const PAGE: i64 = 500;

const SQL_PLACES: [Sealed; 5] = [
    Sealed {
        table: "sessions",
        id: "id",
        column: "session_key",
        context: |id| id.to_owned(),
    },
    Sealed {
        table: "signing_keys",
        id: "kid",
        column: "private_key",
        context: crate::jwt::seal_context,
    },
    Sealed {
        table: "wechat_tokens",
        id: "app_id",
        column: "token",
        context: super::wechat_tokens::context_of,
    },
    Sealed {
        table: "login_codes",
        id: "hash",
        column: "result",
        context: crate::service::login::code_context,
    },
    Sealed {
        table: "refresh_grace",
        id: "hash",
        column: "successor",
        context: crate::service::sessions::successor_context,
    },
];

/// Seals every stored value again under `key`'s current key.
pub async fn reseal_all(stores: &Stores, key: &DataKey) -> anyhow::Result<Vec<Resealed>> {
    let mut report = Vec::new();
    for place in &SQL_PLACES {
        report.push(reseal_table(&stores.sql, key, place).await?);
    }
    if let Some(redis) = &stores.redis {
        report.extend(reseal_redis(redis, key).await?);
    }
    Ok(report)
}

async fn reseal_table(store: &SqlStore, key: &DataKey, place: &Sealed) -> anyhow::Result<Resealed> {
    let (table, id, column) = (place.table, place.id, place.column);
    let page = store.prepare(&format!(
        "SELECT {id}, {column} FROM {table} WHERE {id} > ? AND {column} IS NOT NULL \
         ORDER BY {id} LIMIT {PAGE}"
    ));
    let update = store.prepare(&format!(
        "UPDATE {table} SET {column} = ? WHERE {id} = ? AND {column} = ?"
    ));
    let mut report = Resealed::new(table);
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&page)
            .bind(&after)
            .fetch_all(store.pool())
            .await?;
        for row in &rows {
            let row_id: String = row.try_get(0)?;
            let sealed: String = row.try_get(1)?;
            match key.reseal(&sealed, &(place.context)(&row_id)) {
                Ok(None) => report.current += 1,
                Ok(Some(resealed)) => {
                    sqlx::query(&update)
                        .bind(&resealed)
                        .bind(&row_id)
                        .bind(&sealed)
                        .execute(store.writer())
                        .await?;
                    report.resealed += 1;
                }
                Err(_) => report.unreadable += 1,
            }
            after = row_id;
        }
        if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            return Ok(report);
        }
    }
}

/// KEYS[1] = a session hash; ARGV = the sealed value read, the new one. Replaces `sk` only if
/// it is still the value read.
const SWAP_FIELD: &str = r"
if redis.call('HGET', KEYS[1], 'sk') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sk', ARGV[2])
return 1
";

/// KEYS[1] = a string key; ARGV = the value read, the new one. Replaces it, keeping its TTL,
/// only if it is still the value read.
const SWAP_VALUE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// The Redis keys holding sealed values: sessions' session_keys (`s:`), the WeChat token
/// cache (`wx:token:`), remembered login codes (`c:`) and kept refresh successors (`g:`).
async fn reseal_redis(redis: &RedisSessionStore, key: &DataKey) -> anyhow::Result<Vec<Resealed>> {
    let prefix = redis.prefix().to_owned();
    let mut conn = redis.connection();
    let swap_field = redis::Script::new(SWAP_FIELD);
    let swap_value = redis::Script::new(SWAP_VALUE);

    let mut sessions = Resealed::new("redis sessions");
    for skey in scan(&mut conn, &format!("{prefix}s:*")).await? {
        let Some(sealed): Option<String> = conn.hget(&skey, "sk").await? else {
            continue;
        };
        let session_id = &skey[prefix.len() + 2..];
        match key.reseal(&sealed, session_id) {
            Ok(None) => sessions.current += 1,
            Ok(Some(resealed)) => {
                let _: i64 = swap_field
                    .key(&skey)
                    .arg(&sealed)
                    .arg(&resealed)
                    .invoke_async(&mut conn)
                    .await?;
                sessions.resealed += 1;
            }
            Err(_) => sessions.unreadable += 1,
        }
    }

    // `<time>:<sealed>` strings, each bound to a context named by the rest of its key.
    let strings: [(&str, &str, Context); 3] = [
        (
            "redis wechat tokens",
            "wx:token:",
            super::wechat_tokens::context_of,
        ),
        (
            "redis login codes",
            "c:",
            crate::service::login::code_context,
        ),
        (
            "redis refresh successors",
            "g:",
            crate::service::sessions::successor_context,
        ),
    ];
    let mut report = vec![sessions];
    for (place, kind, context) in strings {
        let mut done = Resealed::new(place);
        for string_key in scan(&mut conn, &format!("{prefix}{kind}*")).await? {
            let Some(value): Option<String> = conn.get(&string_key).await? else {
                continue;
            };
            let Some((time, sealed)) = value.split_once(':') else {
                continue;
            };
            // A login code still being exchanged holds no result yet.
            if sealed.is_empty() {
                continue;
            }
            match key.reseal(sealed, &context(&string_key[prefix.len() + kind.len()..])) {
                Ok(None) => done.current += 1,
                Ok(Some(resealed)) => {
                    let _: i64 = swap_value
                        .key(&string_key)
                        .arg(&value)
                        .arg(format!("{time}:{resealed}"))
                        .invoke_async(&mut conn)
                        .await?;
                    done.resealed += 1;
                }
                Err(_) => done.unreadable += 1,
            }
        }
        report.push(done);
    }
    Ok(report)
}

/// Every key matching `pattern` (SCAN, so Redis is never blocked).
async fn scan(
    conn: &mut super::redis::TimedConnection,
    pattern: &str,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
