//! The load: N clients sharing one keep-alive HTTP client, each looping over one scenario's
//! request until the deadline (or the request budget) is reached, recording each duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::ValueEnum;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::report::Tally;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `POST /v1/auth/login` with a fresh code (90 % returning users, 10 % new).
    Login,
    /// `GET /v1/me` with a bearer token.
    Me,
    /// `POST /v1/auth/refresh`, each client following its own rotation chain.
    Refresh,
    /// `GET /healthz`: the same process's ceiling, to compare the others with.
    Healthz,
    /// `GET /v1/verify` (forward auth) with a bearer token.
    Verify,
    /// `POST /v1/introspect` (RFC 7662) with a service credential and a token.
    Introspect,
    /// All of the above, one after the other.
    All,
}

impl Scenario {
    /// The scenarios this one stands for, in run order.
    pub fn expand(self) -> Vec<Scenario> {
        match self {
            Scenario::All => vec![
                Scenario::Login,
                Scenario::Me,
                Scenario::Refresh,
                Scenario::Healthz,
                Scenario::Verify,
                Scenario::Introspect,
            ],
            one => vec![one],
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Me => "me",
            Scenario::Refresh => "refresh",
            Scenario::Healthz => "healthz",
            Scenario::Verify => "verify",
            Scenario::Introspect => "introspect",
            Scenario::All => "all",
        }
    }
}

/// What every client shares.
pub struct Load {
    /// One keep-alive client for everything.
    pub http: reqwest::Client,
    /// The service's base URL.
    pub api: String,
    /// The simulator's base URL.
    pub sim: String,
    /// The mini program.
    pub app_id: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// How long each scenario runs.
    pub duration: Duration,
    /// Most timed requests per scenario.
    pub max_requests: u64,
    /// Size of the user pool (returning users in login, logged-in users in me).
    pub users: u64,
    /// The service credential for introspection (name, secret).
    pub service: (String, String),
}

/// One scenario's shared progress.
struct Run {
    deadline: Instant,
    /// Timed requests started so far; also numbers the login scenario's users.
    issued: AtomicU64,
    /// For `me`: the tokens of the logged-in pool.
    tokens: Vec<String>,
}

impl Run {
    /// The number of the next timed request, or `None` when time or budget is used up.
    fn next(&self, load: &Load) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        (n < load.max_requests).then_some(n)
    }
}

/// Runs one scenario (after its untimed preparation) and returns what was recorded and the
/// wall time of the measured part.
pub async fn run(load: &Arc<Load>, scenario: Scenario) -> anyhow::Result<(Tally, Duration)> {
    let tokens = match scenario {
        Scenario::Me | Scenario::Verify | Scenario::Introspect => prepare_me(load).await?,
        _ => Vec::new(),
    };
    let started = Instant::now();
    let run = Arc::new(Run {
        deadline: started + load.duration,
        issued: AtomicU64::new(0),
        tokens,
    });
    let mut clients = JoinSet::new();
    for client in 0..load.concurrency {
        let (load, run) = (load.clone(), run.clone());
        clients.spawn(async move {
            match scenario {
                Scenario::Login => login_client(&load, &run).await,
                Scenario::Me | Scenario::Verify | Scenario::Introspect | Scenario::Healthz => {
                    authed_client(&load, &run, client, scenario).await
                }
                // `All` is expanded by the caller; it never gets here.
                Scenario::Refresh | Scenario::All => refresh_client(&load, &run, client).await,
            }
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = clients.join_next().await {
        tally.merge(joined.context("A client task panicked")??);
    }
    Ok((tally, started.elapsed()))
}

async fn login_client(load: &Load, run: &Run) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    while let Some(n) = run.next(load) {
        // Each pool user comes back every `users / 0.9` logins, evenly spread, which keeps
        // every user under WeChat's 100 code2Session calls a minute for moderate runs.
        let user = if n % 10 == 9 {
            format!("new-{n}")
        } else {
            format!("user-{}", n % load.users)
        };
        let code = sim_code(load, &user).await?;
        let request = load
            .http
            .post(format!("{}/v1/auth/login", load.api))
            .json(&json!({ "code": code }));
        tally.record(timed(request).await);
    }
    Ok(tally)
}

/// `me`, `verify`, `introspect` (each request with one of the pool's tokens) and `healthz`.
async fn authed_client(
    load: &Load,
    run: &Run,
    client: usize,
    scenario: Scenario,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut i = client;
    while run.next(load).is_some() {
        let token = run.tokens.get(i % run.tokens.len().max(1));
        i = i.wrapping_add(load.concurrency);
        let request = match (scenario, token) {
            (Scenario::Healthz, _) => load.http.get(format!("{}/healthz", load.api)),
            (Scenario::Verify, Some(token)) => load
                .http
                .get(format!("{}/v1/verify", load.api))
                .bearer_auth(token),
            (Scenario::Introspect, Some(token)) => load
                .http
                .post(format!("{}/v1/introspect", load.api))
                .basic_auth(&load.service.0, Some(&load.service.1))
                .form(&[("token", token.as_str())]),
            (_, Some(token)) => load
                .http
                .get(format!("{}/v1/me", load.api))
                .bearer_auth(token),
            (_, None) => anyhow::bail!("no user was logged in for {}", scenario.name()),
        };
        tally.record(timed(request).await);
    }
    Ok(tally)
}

async fn refresh_client(load: &Load, run: &Run, client: usize) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let user = format!("refresh-{client}");
    let mut refresh_token = log_in(load, &user).await?.1;
    while run.next(load).is_some() {
        let request = load
            .http
            .post(format!("{}/v1/auth/refresh", load.api))
            .json(&json!({ "refresh_token": refresh_token }));
        let (elapsed, outcome) = timed(request).await;
        let next = outcome.and_then(|body| {
            token_field(&body, "refresh_token")
                .ok_or_else(|| format!("no refresh_token in the answer: {body}"))
        });
        match next {
            Ok(token) => {
                tally.record((elapsed, Ok(String::new())));
                refresh_token = token;
            }
            Err(error) => {
                tally.record((elapsed, Err(error)));
                // The chain is broken (or revoked): start a new one, untimed.
                refresh_token = log_in(load, &user).await?.1;
            }
        }
    }
    Ok(tally)
}

/// Logs in `load.users` distinct users, spread over the clients, and returns their tokens.
async fn prepare_me(load: &Arc<Load>) -> anyhow::Result<Vec<String>> {
    let mut clients = JoinSet::new();
    for client in 0..load.concurrency {
        let load = load.clone();
        clients.spawn(async move {
            let mut tokens = Vec::new();
            let stride = u64::try_from(load.concurrency).context("concurrency")?;
            let mut n = u64::try_from(client).context("client number")?;
            while n < load.users {
                tokens.push(log_in(&load, &format!("me-{n}")).await?.0);
                n += stride;
            }
            anyhow::Ok(tokens)
        });
    }
    let mut tokens = Vec::new();
    while let Some(joined) = clients.join_next().await {
        tokens.extend(joined.context("A client task panicked")??);
    }
    anyhow::ensure!(
        !tokens.is_empty(),
        "no user was logged in for the me scenario"
    );
    Ok(tokens)
}

/// What `wx.login` gives `user`: a code from the simulator.
async fn sim_code(load: &Load, user: &str) -> anyhow::Result<String> {
    let response = load
        .http
        .post(format!("{}/sim/login", load.sim))
        .json(&json!({ "appid": load.app_id, "user": user }))
        .send()
        .await
        .context("Failed to ask the simulator for a login code")?;
    let status = response.status();
    let body = response
        .text()
        .await
        .context("Failed to read the simulator's answer")?;
    anyhow::ensure!(
        status.is_success(),
        "the simulator refused a login code: {status}: {body}"
    );
    token_field(&body, "code").with_context(|| format!("no code in the simulator's answer: {body}"))
}

/// An untimed login: (access token, refresh token).
async fn log_in(load: &Load, user: &str) -> anyhow::Result<(String, String)> {
    let code = sim_code(load, user).await?;
    let request = load
        .http
        .post(format!("{}/v1/auth/login", load.api))
        .json(&json!({ "code": code }));
    let body = timed(request)
        .await
        .1
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("Failed to log {user} in"))?;
    let field = |name| {
        token_field(&body, name).with_context(|| format!("no {name} in the login answer: {body}"))
    };
    Ok((field("access_token")?, field("refresh_token")?))
}

/// Sends a request and reads the whole answer; a non-2xx status is an error carrying the body.
async fn timed(request: reqwest::RequestBuilder) -> (Duration, Result<String, String>) {
    let started = Instant::now();
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.text().await {
                Ok(body) if status.is_success() => Ok(body),
                Ok(body) => Err(format!("{status}: {body}")),
                Err(error) => Err(format!("{status}, body unreadable: {error}")),
            }
        }
        Err(error) => Err(format!("request failed: {error}")),
    };
    (started.elapsed(), outcome)
}

fn token_field(body: &str, name: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}
