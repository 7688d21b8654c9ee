//! The WeChat endpoints, answering as WeChat does: HTTP 200 with a JSON body for success and
//! for every errcode, `errmsg` ending in a `rid`, the same parameter names and JSON shapes.
//!
//! Handlers only read the request, count it, apply a queued fault, call the rule in
//! `state` and write the answer. Malformed input never fails an extractor: a bad
//! query string reads as no parameters, a bad body as WeChat's 47001, so every request gets a
//! WeChat-shaped answer.
//!
//! Each call runs in a task of its own, so a client hanging up does not cancel it (see
//! [`run_to_completion`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::faults::{
    CHECK_SESSION, Fault, GET_USER_PHONE_NUMBER, JSCODE2SESSION, RESET_SESSION_KEY, STABLE_TOKEN,
    TOKEN,
};
use crate::people::Phone;
use crate::state::{Sim, Watermark, WxError};

/// The app name statistics use when a call names none the simulator knows.
const UNKNOWN_APP: &str = "unknown";

/// WeChat's content type for JSON answers.
const JSON: &str = "application/json; encoding=utf-8";
/// jscode2session answers JSON labelled as plain text; clients that insist on a JSON content
/// type break against the real thing, so they should break here too.
const PLAIN: &str = "text/plain";

/// The WeChat routes.
pub fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route(JSCODE2SESSION, get(jscode2session))
        .route(STABLE_TOKEN, post(stable_token))
        .route(TOKEN, get(classic_token))
        .route(GET_USER_PHONE_NUMBER, post(phone_number))
        .route(CHECK_SESSION, get(check_session))
        .route(RESET_SESSION_KEY, get(reset_session_key))
        .route_layer(middleware::from_fn(run_to_completion))
}

/// Runs a WeChat call in a task of its own and waits for it.
///
/// Axum drops a handler when its client hangs up; a client that times out during a
/// `delay_ms` fault would then cancel the call before it is processed, and its code would
/// still work. WeChat processes a call whether or not anyone is left to read the answer, so
/// the call runs to completion and its answer is thrown away.
async fn run_to_completion(request: Request, next: Next) -> Response {
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(error) => match error.try_into_panic() {
            // A handler panic surfaces here as it would have without the task.
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down under the call.
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
    }
}

type Params = HashMap<String, String>;

/// The query parameters, or none when the query string does not parse.
fn params(query: Result<Query<Params>, QueryRejection>) -> Params {
    query.map(|Query(params)| params).unwrap_or_default()
}

/// A parameter, treating an empty value as absent (as WeChat does).
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// WeChat's request id: the time in hex and two random words.
fn rid(now: i64) -> String {
    let [a, b]: [u32; 2] = rand::random();
    // Truncation to 32 bits is what WeChat's own rids show.
    format!("{:08x}-{a:08x}-{b:08x}", now as u32)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn error_body(error: WxError, now: i64) -> String {
    #[derive(Serialize)]
    struct ErrorBody {
        errcode: i64,
        errmsg: String,
    }
    to_json(&ErrorBody {
        errcode: error.errcode,
        errmsg: format!("{} rid: {}", error.errmsg, rid(now)),
    })
}

fn to_json<T: Serialize>(value: &T) -> String {
    // The answer types are structs of strings and integers, which always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

/// The answer a fault gives, or `None` when it only delays.
fn fault_answer(fault: &Fault, content_type: &'static str, now: i64) -> Option<Response> {
    if let Some(body) = &fault.body {
        let status = fault.http_status.unwrap_or(StatusCode::OK);
        return Some(respond(status, content_type, body.clone()));
    }
    if let Some(errcode) = fault.errcode {
        let status = fault.http_status.unwrap_or(StatusCode::OK);
        let body = error_body(WxError::for_errcode(errcode), now);
        return Some(respond(status, content_type, body));
    }
    fault.http_status.map(|status| {
        let text = status.canonical_reason().unwrap_or("error").to_owned();
        respond(status, PLAIN, text)
    })
}

/// Runs one WeChat call: counts it, applies a queued fault, else runs `rule` and answers.
async fn serve_call<T, F>(
    sim: &Sim,
    path: &'static str,
    app: &str,
    content_type: &'static str,
    rule: F,
) -> Response
where
    T: Serialize,
    F: FnOnce() -> Result<T, WxError>,
{
    sim.stats.record(path, app);
    if let Some(fault) = sim.faults.take(path) {
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(answer) = fault_answer(&fault, content_type, sim.clock.now()) {
            tracing::debug!(
                path,
                appid = app,
                errcode = fault.errcode,
                "wechat call (faulted)"
            );
            return answer;
        }
    }
    match rule() {
        Ok(body) => {
            tracing::debug!(path, appid = app, errcode = 0, "wechat call");
            respond(StatusCode::OK, content_type, to_json(&body))
        }
        Err(error) => {
            tracing::debug!(path, appid = app, errcode = error.errcode, "wechat call");
            respond(
                StatusCode::OK,
                content_type,
                error_body(error, sim.clock.now()),
            )
        }
    }
}

/// `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`.
async fn jscode2session(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Response {
    let p = params(query);
    let app = param(&p, "appid").unwrap_or(UNKNOWN_APP);
    serve_call(&sim, JSCODE2SESSION, app, PLAIN, || {
        sim.code2session(
            param(&p, "appid"),
            param(&p, "secret"),
            param(&p, "grant_type"),
            param(&p, "js_code"),
        )
    })
    .await
}

/// `POST /cgi-bin/stable_token {"grant_type","appid","secret","force_refresh"}`.
async fn stable_token(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .filter(serde_json::Value::is_object);
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|body| body.get(name))
            .and_then(serde_json::Value::as_str)
            .filter(|value| !value.is_empty())
    };
    let app = field("appid").unwrap_or(UNKNOWN_APP);
    serve_call(&sim, STABLE_TOKEN, app, JSON, || {
        let body = parsed.as_ref().ok_or(WxError::DATA_FORMAT)?;
        let force_refresh = match body.get("force_refresh") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(force)) => *force,
            Some(_) => return Err(WxError::DATA_FORMAT),
        };
        sim.stable_token(
            field("grant_type"),
            field("appid"),
            field("secret"),
            force_refresh,
        )
    })
    .await
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid&secret`.
async fn classic_token(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Response {
    let p = params(query);
    let app = param(&p, "appid").unwrap_or(UNKNOWN_APP);
    serve_call(&sim, TOKEN, app, JSON, || {
        sim.classic_token(
            param(&p, "grant_type"),
            param(&p, "appid"),
            param(&p, "secret"),
        )
    })
    .await
}

/// `POST /wxa/business/getuserphonenumber?access_token=T {"code"}`.
async fn phone_number(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<Params>, QueryRejection>,
    body: Bytes,
) -> Response {
    #[derive(Serialize)]
    struct PhoneInfo {
        #[serde(flatten)]
        phone: Phone,
        watermark: Watermark,
    }
    #[derive(Serialize)]
    struct Answer {
        errcode: i64,
        errmsg: &'static str,
        phone_info: PhoneInfo,
    }
    let p = params(query);
    let token = param(&p, "access_token");
    let owner = sim.token_owner(token);
    let app = owner.as_deref().unwrap_or(UNKNOWN_APP);
    serve_call(&sim, GET_USER_PHONE_NUMBER, app, JSON, || {
        let (phone, watermark) = sim.phone_number(token, &body)?;
        Ok(Answer {
            errcode: 0,
            errmsg: "ok",
            phone_info: PhoneInfo { phone, watermark },
        })
    })
    .await
}

/// `GET /wxa/checksession?access_token&openid&signature&sig_method=hmac_sha256`.
async fn check_session(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Response {
    #[derive(Serialize)]
    struct Answer {
        errcode: i64,
        errmsg: &'static str,
    }
    let p = params(query);
    let token = param(&p, "access_token");
    let owner = sim.token_owner(token);
    let app = owner.as_deref().unwrap_or(UNKNOWN_APP);
    serve_call(&sim, CHECK_SESSION, app, JSON, || {
        sim.check_session(
            token,
            param(&p, "openid"),
            param(&p, "signature"),
            param(&p, "sig_method"),
        )?;
        Ok(Answer {
            errcode: 0,
            errmsg: "ok",
        })
    })
    .await
}

/// `GET /wxa/resetusersessionkey?access_token&openid&signature&sig_method=hmac_sha256`.
async fn reset_session_key(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Response {
    #[derive(Serialize)]
    struct Answer {
        errcode: i64,
        errmsg: &'static str,
        openid: String,
        session_key: String,
    }
    let p = params(query);
    let token = param(&p, "access_token");
    let owner = sim.token_owner(token);
    let app = owner.as_deref().unwrap_or(UNKNOWN_APP);
    serve_call(&sim, RESET_SESSION_KEY, app, JSON, || {
        let (openid, session_key) = sim.reset_session_key(
            token,
            param(&p, "openid"),
            param(&p, "signature"),
            param(&p, "sig_method"),
        )?;
        Ok(Answer {
            errcode: 0,
            errmsg: "ok",
            openid,
            session_key,
        })
    })
    .await
}
