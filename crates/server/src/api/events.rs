//! `GET /v1/events`: the event feed, for services that cannot take inbound calls. A
//! `[[services]]` credential (HTTP Basic, as for `/v1/introspect`) reads the events in order
//! from a cursor; with `wait`, the call waits for new events when there are none yet.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::services::authenticate_service;
use crate::error::ApiError;
use crate::events;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Most events one call returns.
pub const MAX_LIMIT: u32 = 1000;
/// Events one call returns unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// The longest `wait` honoured (it is also kept below `server.request_timeout`).
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting call looks for events written by other instances.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// The feed route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(feed))
}

/// `GET /v1/events` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// The cursor: the id of the last event already seen (`next_after` of the previous call).
    /// Left out: from the oldest event kept.
    #[serde(default)]
    pub after: Option<String>,
    /// How many events at most (1 to 1000, default 100).
    #[serde(default)]
    pub limit: Option<String>,
    /// Comma-separated event types; all when left out.
    #[serde(default)]
    pub types: Option<String>,
    /// How long to wait for an event when there is none yet ("30s", at most 30 s).
    #[serde(default)]
    pub wait: Option<String>,
}

/// What the feed answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    /// The events, oldest first: `{id, type, occurred_at, data}`.
    pub events: Vec<Value>,
    /// The `after` of the next call: the last event this call looked at (also when the type
    /// filter left it out), or the `after` given when there was none. `null` only when no
    /// event exists yet.
    pub next_after: Option<String>,
}

/// The parameters, checked.
struct Parsed {
    after: Option<String>,
    limit: u32,
    types: Option<Vec<String>>,
    wait: Duration,
}

fn parse(query: FeedQuery, wait_cap: Duration) -> Result<Parsed, ApiError> {
    let bad = |message: String| ApiError::InvalidRequest(message.into());
    let after = match query.after {
        Some(after) if uuid::Uuid::parse_str(&after).is_err() => {
            return Err(bad("after must be an event id (a UUID)".to_owned()));
        }
        after => after,
    };
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit must be a number from 1 to {MAX_LIMIT}")))?,
    };
    let types = match query.types {
        None => None,
        Some(text) => {
            let types: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if types.is_empty() {
                return Err(bad("types must name at least one event type".to_owned()));
            }
            if let Some(unknown) = types.iter().find(|t| !events::is_type(t)) {
                return Err(bad(format!(
                    "types: {unknown:?} is not an event type (known: {})",
                    events::TYPES.join(", ")
                )));
            }
            Some(types)
        }
    };
    let wait = match query.wait {
        None => Duration::ZERO,
        Some(text) => {
            let text = text.trim();
            let wait = text
                .parse::<u64>()
                .map(Duration::from_secs)
                .or_else(|_| humantime::parse_duration(text))
                .map_err(|_| bad("wait must be a duration such as \"30s\"".to_owned()))?;
            wait.min(MAX_WAIT).min(wait_cap)
        }
    };
    Ok(Parsed {
        after,
        limit,
        types,
        wait,
    })
}

/// The event feed: events in order after a cursor, for services that cannot take webhooks.
/// With `wait`, an empty answer waits for the next event.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "services",
    security(("service_credentials" = [])),
    params(FeedQuery),
    responses((status = 200, description = "The next events", body = FeedPage, links(
        ("next_page" = (operation_id = "feed", parameters(("after" = "$response.body#/next_after")))),
    ))),
)]
pub(crate) async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<ApiQuery<FeedQuery>, ApiError>,
) -> Result<Json<FeedPage>, ApiError> {
    authenticate_service(&state, &headers)?;
    let ApiQuery(query) = query?;
    let parsed = parse(query, state.feed_wait_cap)?;
    read(&state, parsed).await.map(Json)
}

/// Reads a page; when it is empty and the caller waits, looks again whenever this instance
/// writes an event, and every [`POLL_EVERY`] for other instances' (and for events settling).
async fn read(state: &AppState, parsed: Parsed) -> Result<FeedPage, ApiError> {
    let sql = &state.stores.sql;
    let deadline = tokio::time::Instant::now() + parsed.wait;
    let mut after = parsed.after;
    loop {
        let written = sql.outbox().written.notified();
        let mut written = std::pin::pin!(written);
        written.as_mut().enable();
        let page = sql
            .read_events(after.as_deref(), parsed.types.as_deref(), parsed.limit)
            .await?
            .ok_or_else(|| {
                ApiError::InvalidRequest(
                    "after names no stored event (events are kept for events.retention)".into(),
                )
            })?;
        let now = tokio::time::Instant::now();
        if !page.events.is_empty() || now >= deadline {
            let events = page
                .events
                .iter()
                .map(|text| serde_json::from_str(text))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::from)?;
            return Ok(FeedPage {
                events,
                next_after: page.next_after,
            });
        }
        // Events the type filter skipped need not be read again.
        after = page.next_after;
        tokio::select! {
            () = written => {}
            () = tokio::time::sleep(POLL_EVERY.min(deadline - now)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(after: Option<&str>, limit: Option<&str>, types: Option<&str>) -> FeedQuery {
        FeedQuery {
            after: after.map(str::to_owned),
            limit: limit.map(str::to_owned),
            types: types.map(str::to_owned),
            wait: None,
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let cap = MAX_WAIT;
        assert!(parse(query(Some("nope"), None, None), cap).is_err());
        assert!(parse(query(None, Some("0"), None), cap).is_err());
        assert!(parse(query(None, Some("1001"), None), cap).is_err());
        assert!(parse(query(None, Some("x"), None), cap).is_err());
        assert!(parse(query(None, None, Some("person.made")), cap).is_err());
        assert!(parse(query(None, None, Some(",")), cap).is_err());
        let ok = parse(
            query(None, Some("5"), Some("person.created, person.merged")),
            cap,
        )
        .unwrap();
        assert_eq!(ok.limit, 5);
        assert_eq!(
            ok.types.unwrap(),
            ["person.created".to_owned(), "person.merged".to_owned()]
        );
    }

    #[test]
    fn the_wait_is_capped() {
        let mut q = FeedQuery {
            wait: Some("5m".to_owned()),
            ..FeedQuery::default()
        };
        assert_eq!(parse(q, MAX_WAIT).unwrap().wait, MAX_WAIT);
        q = FeedQuery {
            wait: Some("20".to_owned()),
            ..FeedQuery::default()
        };
        assert_eq!(
            parse(q, Duration::from_secs(9)).unwrap().wait,
            Duration::from_secs(9)
        );
        q = FeedQuery {
            wait: Some("soon".to_owned()),
            ..FeedQuery::default()
        };
        assert!(parse(q, MAX_WAIT).is_err());
    }
}
