//! The event outbox, read through `GET /v1/events` (HTTP Basic with a `[[services]]`
//! credential): each change writes its events with it, a person is announced once whichever
//! mini program it comes through first, merges and revocations are told, and the feed pages
//! every event once, in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use wechat_sim::SimApp;
use wxauth::config::{ServiceConfig, WebhookConfig};
use wxauth_wechat::{SessionKey, crypto};

use crate::helpers::*;

const APP_A: &str = "wxaaaaaaaaaaaaaaa1";
const APP_B: &str = "wxbbbbbbbbbbbbbbb2";
const APP_U: &str = "wxccccccccccccccc3";
const SERVICE: &str = "gifts";
const SECRET: &str = "gifts-secret-0123456789";

/// Two bound apps and one unbound one, and a service that may read the feed.
async fn events_app() -> TestApp {
    let apps = [(APP_A, true), (APP_B, true), (APP_U, false)];
    spawn_app_with(Options {
        apps: apps
            .iter()
            .map(|(id, _)| ((*id).to_owned(), format!("secret-of-{id}")))
            .collect(),
        sim_apps: Some(
            apps.iter()
                .map(|(id, bound)| SimApp {
                    appid: (*id).to_owned(),
                    secret: format!("secret-of-{id}"),
                    bound: *bound,
                })
                .collect(),
        ),
        tweak: Box::new(|config| {
            config.services = vec![ServiceConfig {
                name: SERVICE.to_owned(),
                secret: Some(SecretString::from(SECRET)),
                secret_file: None,
                secret_env: None,
            }];
        }),
    })
    .await
}

async fn feed_response(app: &TestApp, query: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/events{query}")))
        .basic_auth(SERVICE, Some(SECRET))
        .send()
        .await
        .unwrap()
}

async fn feed(app: &TestApp, query: &str) -> Value {
    let response = feed_response(app, query).await;
    assert_eq!(response.status(), StatusCode::OK, "GET /v1/events{query}");
    response.json().await.unwrap()
}

/// Every event there is, paging with the cursor; waits until `expected` have arrived (events
/// settle for a moment on MySQL and PostgreSQL before they are shown).
async fn all_events(app: &TestApp, expected: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut settled = false;
    loop {
        let query = match &after {
            Some(after) => format!("?limit=3&after={after}"),
            None => "?limit=3".to_owned(),
        };
        let page = feed(app, &query).await;
        let got = page["events"].as_array().unwrap().clone();
        if let Some(next) = page["next_after"].as_str() {
            after = Some(next.to_owned());
        }
        if got.is_empty() {
            if events.len() >= expected {
                // On MySQL and PostgreSQL events settle for a second before they are shown:
                // look once more after that, so that an event too many is seen too.
                if settled || app.backend.sql == crate::backend::Sql::Sqlite {
                    return events;
                }
                settled = true;
                tokio::time::sleep(Duration::from_millis(1200)).await;
                continue;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} events, not {expected}: {events:#?}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        events.extend(got);
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn user_id(login: &Value) -> String {
    login["user"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_new_person_is_announced_once_with_the_identity_it_came_through() {
    let app = events_app().await;
    let login = app.login_in(APP_A, "amy").await;
    let again = app.login_in(APP_A, "amy").await;
    assert_eq!(user_id(&again), user_id(&login));
    let events = all_events(&app, 2).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let (created, identity) = (&events[0], &events[1]);
    assert_eq!(created["type"], "person.created");
    assert_eq!(created["data"]["user_id"], login["user"]["id"]);
    assert_eq!(created["data"]["app_id"], APP_A);
    assert_eq!(created["data"]["openid"], login["user"]["openid"]);
    assert_eq!(created["data"]["unionid"], login["user"]["unionid"]);
    assert_eq!(identity["type"], "identity.created");
    assert_eq!(identity["data"]["is_new_user"], true);
    assert_eq!(identity["data"]["user_id"], login["user"]["id"]);
    for event in &events {
        let id = uuid::Uuid::parse_str(event["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let at = event["occurred_at"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
        assert_eq!(
            event.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["data", "id", "occurred_at", "type"]
        );
    }
}

#[tokio::test]
async fn one_person_through_two_apps_in_either_order_is_created_once() {
    let app = events_app().await;
    let first = app.login_in(APP_A, "amy").await;
    let second = app.login_in(APP_B, "amy").await;
    let other_first = app.login_in(APP_B, "bob").await;
    let other_second = app.login_in(APP_A, "bob").await;
    assert_eq!(user_id(&first), user_id(&second));
    assert_eq!(user_id(&other_first), user_id(&other_second));
    let events = all_events(&app, 6).await;
    let created: Vec<_> = of_type(&events, "person.created")
        .iter()
        .map(|e| e["data"]["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, [user_id(&first), user_id(&other_first)]);
    let identities = of_type(&events, "identity.created");
    let news: Vec<_> = identities
        .iter()
        .map(|e| {
            (
                e["data"]["app_id"].as_str().unwrap(),
                e["data"]["is_new_user"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        news,
        [(APP_A, true), (APP_B, false), (APP_B, true), (APP_A, false)]
    );
}

#[tokio::test]
async fn concurrent_first_logins_through_two_apps_announce_each_person_once() {
    let app = Arc::new(events_app().await);
    let humans: Vec<String> = (0..8).map(|i| format!("racer{i}")).collect();
    let mut tasks = Vec::new();
    for human in &humans {
        for app_id in [APP_A, APP_B, APP_A, APP_B] {
            let (app, human) = (app.clone(), human.clone());
            tasks.push(tokio::spawn(
                async move { app.login_in(app_id, &human).await },
            ));
        }
    }
    let mut persons = HashSet::new();
    for task in tasks {
        persons.insert(user_id(&task.await.unwrap()));
    }
    assert_eq!(persons.len(), humans.len());
    let events = all_events(&app, humans.len() * 3).await;
    let mut created: HashMap<String, usize> = HashMap::new();
    for event in of_type(&events, "person.created") {
        *created
            .entry(event["data"]["user_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(created.len(), humans.len(), "{created:?}");
    assert!(created.values().all(|n| *n == 1), "{created:?}");
    assert_eq!(
        created.keys().cloned().collect::<HashSet<_>>(),
        persons,
        "only persons that exist are announced"
    );
    let identities = of_type(&events, "identity.created");
    assert_eq!(identities.len(), humans.len() * 2);
    let new_users = identities
        .iter()
        .filter(|e| e["data"]["is_new_user"] == true)
        .count();
    assert_eq!(new_users, humans.len());
}

#[tokio::test]
async fn a_late_merge_is_told_as_person_merged_from_the_person_that_goes() {
    let app = events_app().await;
    let key = "HyVFkGl5F5OQWJZZaNzBBg==";
    app.sim(
        "/sim/users",
        json!({ "appid": APP_U, "user": "ben", "session_key": key }),
    )
    .await;
    let in_u = app.login_in(APP_U, "ben").await;
    let in_a = app.login_in(APP_A, "ben").await;
    assert_ne!(user_id(&in_u), user_id(&in_a));
    let unionid = in_a["user"]["unionid"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let plain = json!({ "openId": in_u["user"]["openid"], "unionId": unionid,
                        "watermark": { "appid": APP_U, "timestamp": now } });
    let iv = [1u8; 16];
    let body = json!({
        "encrypted_data": crypto::encrypt(&SessionKey::parse(key).unwrap(), &iv, plain.to_string().as_bytes()),
        "iv": crypto::encode_iv(&iv),
    });
    let response = app
        .post_authed("/v1/me/userinfo", &token(&in_u, "access_token"), body)
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let events = all_events(&app, 5).await;
    let kinds: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "person.created",
            "identity.created",
            "person.created",
            "identity.created",
            "person.merged"
        ]
    );
    let merged = &events[4]["data"];
    // The older person (the one that came through the unbound app) survives.
    assert_eq!(merged["survivor_id"], in_u["user"]["id"]);
    assert_eq!(merged["merged_id"], in_a["user"]["id"]);
    assert_eq!(merged["user_id"], in_u["user"]["id"]);
    assert_eq!(merged["unionid"], unionid.as_str());
}

#[tokio::test]
async fn profile_changes_tell_field_names_and_a_bound_phone_only_masked() {
    let app = events_app().await;
    let login = app.login_in(APP_A, "eve").await;
    let access = token(&login, "access_token");
    let patch = |body: Value| app.patch_authed("/v1/me", &access, body);
    assert_eq!(
        patch(json!({ "nickname": "Eve😀", "gender": 2, "extra": { "vip": true } }))
            .await
            .status(),
        StatusCode::OK
    );
    // Setting what is already there changes nothing, and is not told.
    assert_eq!(
        patch(json!({ "nickname": "Eve😀" })).await.status(),
        StatusCode::OK
    );
    let button = app
        .sim(
            "/sim/phone",
            json!({ "appid": APP_A, "user": "eve", "phone": "13812345678" }),
        )
        .await;
    let response = app
        .post_authed("/v1/me/phone", &access, json!({ "code": button["code"] }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let events = all_events(&app, 4).await;
    let kinds: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "person.created",
            "identity.created",
            "profile.updated",
            "phone.bound"
        ]
    );
    let updated = &events[2]["data"];
    assert_eq!(updated["fields"], json!(["nickname", "gender", "extra"]));
    assert_eq!(updated["user_id"], login["user"]["id"]);
    let text = events[2].to_string();
    assert!(!text.contains("Eve") && !text.contains("vip"), "{text}");
    let bound = &events[3];
    assert_eq!(bound["data"]["phone"], "138****5678");
    assert!(!bound.to_string().contains("13812345678"));
}

/// The session id of a login (as introspection tells it).
async fn session_id(app: &TestApp, login: &Value) -> String {
    let body: Value = app
        .http
        .post(app.url("/v1/introspect"))
        .basic_auth(SERVICE, Some(SECRET))
        .form(&[("token", token(login, "access_token").as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn logout_reuse_and_an_operator_each_tell_session_revoked_with_a_reason() {
    let app = events_app().await;
    let by_logout = app.login_in(APP_A, "sam").await;
    let logout_sid = session_id(&app, &by_logout).await;
    for _ in 0..2 {
        // The second logout revokes nothing more, and tells nothing more.
        let _ = app
            .post_authed(
                "/v1/auth/logout",
                &token(&by_logout, "access_token"),
                json!({}),
            )
            .await;
    }

    let by_reuse = app.login_in(APP_A, "sam").await;
    let reuse_sid = session_id(&app, &by_reuse).await;
    let refresh = token(&by_reuse, "refresh_token");
    let first = app
        .post("/v1/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    // Past tokens.refresh_grace, the same token again is reuse.
    app.clock.advance(11);
    let again = app
        .post("/v1/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_error(again, StatusCode::UNAUTHORIZED, "token_revoked").await;

    let in_a = app.login_in(APP_A, "sam").await;
    let in_b = app.login_in(APP_B, "sam").await;
    let operator_sids =
        HashSet::from([session_id(&app, &in_a).await, session_id(&app, &in_b).await]);
    let revoked =
        wxauth::admin::revoke_user_sessions(&app.state.stores, &user_id(&in_a), app.clock_now())
            .await
            .unwrap();
    assert_eq!(revoked, Some(2));

    let events = all_events(&app, 7).await;
    assert_eq!(events.len(), 7);
    let revocations: Vec<(String, String)> = of_type(&events, "session.revoked")
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["user_id"], by_logout["user"]["id"]);
            (
                e["data"]["session_id"].as_str().unwrap().to_owned(),
                e["data"]["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(revocations.len(), 4, "{revocations:?}");
    assert_eq!(revocations[0], (logout_sid, "logout".to_owned()));
    assert_eq!(
        revocations[1],
        (reuse_sid, "refresh_token_reused".to_owned())
    );
    let by_operator: HashSet<_> = revocations[2..]
        .iter()
        .map(|(sid, reason)| {
            assert_eq!(reason, "admin");
            sid.clone()
        })
        .collect();
    assert_eq!(by_operator, operator_sids);
}

#[tokio::test]
async fn the_feed_pages_every_event_once_in_order_and_filters_by_type() {
    let app = events_app().await;
    let mut logins = Vec::new();
    for i in 0..5 {
        logins.push(app.login_in(APP_A, &format!("page{i}")).await);
    }
    let everything = all_events(&app, 10).await;
    assert_eq!(everything.len(), 10);
    let ids: Vec<_> = everything.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10);
    for (i, login) in logins.iter().enumerate() {
        assert_eq!(everything[2 * i]["type"], "person.created");
        assert_eq!(everything[2 * i]["data"]["user_id"], login["user"]["id"]);
        assert_eq!(everything[2 * i + 1]["type"], "identity.created");
    }
    // One page of everything reads the same.
    let page = feed(&app, "?limit=1000").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    assert_eq!(page["next_after"], ids[9]);

    // A filter: the cursor moves past what it leaves out.
    let page = feed(&app, "?types=person.created&limit=2").await;
    let got = page["events"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|e| e["type"] == "person.created"));
    assert_eq!(page["next_after"], got[1]["id"]);
    let rest = feed(
        &app,
        &format!(
            "?types=person.created&after={}",
            page["next_after"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next_after"], ids[9], "past the last identity.created");
    let nothing = feed(
        &app,
        &format!("?types=person.merged&after={}", ids[0].as_str().unwrap()),
    )
    .await;
    assert_eq!(nothing["events"], json!([]));
    assert_eq!(nothing["next_after"], ids[9]);
    // At the end: nothing, and the same cursor back.
    let end = feed(&app, &format!("?after={}", ids[9].as_str().unwrap())).await;
    assert_eq!(end, json!({ "events": [], "next_after": ids[9] }));
}

#[tokio::test]
async fn a_waiting_feed_call_answers_when_an_event_is_written() {
    let app = Arc::new(events_app().await);
    app.login_in(APP_A, "first").await;
    let start = all_events(&app, 2).await;
    let last = start[1]["id"].as_str().unwrap().to_owned();
    let waiting = {
        let app = app.clone();
        let last = last.clone();
        tokio::spawn(async move { feed(&app, &format!("?after={last}&wait=20s")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the call waits while nothing is new"
    );
    let login = app.login_in(APP_A, "second").await;
    let page = waiting.await.unwrap();
    let got = page["events"].as_array().unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0]["type"], "person.created");
    assert_eq!(got[0]["data"]["user_id"], login["user"]["id"]);

    // Nothing new within a short wait: an empty page and the same cursor.
    let end = all_events(&app, 4).await;
    let last = end[3]["id"].as_str().unwrap();
    let page = feed(&app, &format!("?after={last}&wait=1s")).await;
    assert_eq!(page, json!({ "events": [], "next_after": last }));
}

#[tokio::test]
async fn the_feed_wants_a_service_credential_and_sane_parameters() {
    let app = events_app().await;
    let anonymous = app.http.get(app.url("/v1/events")).send().await.unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let wrong = app
        .http
        .get(app.url("/v1/events"))
        .basic_auth(SERVICE, Some("not-the-secret"))
        .send()
        .await
        .unwrap();
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let empty = feed(&app, "").await;
    assert_eq!(empty, json!({ "events": [], "next_after": null }));
    for query in [
        "?after=nope",
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?types=person.made",
        "?types=",
        "?wait=soon",
        "?colour=blue",
        // A well-formed id of no stored event.
        "?after=01890a5d-ac96-774b-bcce-b302099a8057",
    ] {
        let response = feed_response(&app, query).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_deletion_is_announced_with_salted_openid_hashes_and_earlier_events_name_the_person_no_more()
 {
    use sha2::{Digest as _, Sha256};
    let app = events_app().await;
    let in_a = app.login_in(APP_A, "zoe").await;
    let in_b = app.login_in(APP_B, "zoe").await;
    let id = user_id(&in_a);
    assert_eq!(user_id(&in_b), id);
    let before = all_events(&app, 3).await;
    assert_eq!(before.len(), 3, "{before:#?}");
    let openids = [
        (APP_A, in_a["user"]["openid"].as_str().unwrap().to_owned()),
        (APP_B, in_b["user"]["openid"].as_str().unwrap().to_owned()),
    ];

    let response = app
        .http
        .delete(app.url("/v1/me"))
        .bearer_auth(token(&in_a, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let after = all_events(&app, 4).await;
    assert_eq!(after.len(), 4, "{after:#?}");
    let text = serde_json::to_string(&after).unwrap();
    for (_, openid) in &openids {
        assert!(!text.contains(openid.as_str()), "{text}");
    }
    assert!(!text.contains(in_a["user"]["unionid"].as_str().unwrap()));
    // The earlier events keep their ids, types, times and order, and carry the id alone.
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(
            (&old["id"], &old["type"], &old["occurred_at"]),
            (&new["id"], &new["type"], &new["occurred_at"])
        );
        assert_eq!(new["data"], json!({ "user_id": id, "erased": true }));
    }
    let deleted = of_type(&after, "person.deleted");
    assert_eq!(deleted.len(), 1);
    let data = &deleted[0]["data"];
    assert_eq!(data["user_id"], id.as_str());
    let salt = data["salt"].as_str().unwrap();
    assert!(salt.len() >= 32, "{salt}");
    let hashes = data["openids"].as_array().unwrap();
    assert_eq!(hashes.len(), 2, "{data}");
    for (app_id, openid) in &openids {
        let expected = hex::encode(Sha256::digest(format!("{salt}{openid}").as_bytes()));
        assert!(
            hashes.contains(&json!({ "app_id": app_id, "openid_sha256": expected })),
            "{data}"
        );
    }
}

#[tokio::test]
async fn only_the_types_an_endpoint_takes_are_queued_for_it() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| {
            let url = "http://127.0.0.1:9/hook".parse().unwrap();
            let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
            let mut created = WebhookConfig::new(url, secret);
            created.events = Some(vec!["person.created".to_owned()]);
            let everything = WebhookConfig::new("http://127.0.0.1:9/all".parse().unwrap(), secret);
            config.webhooks = vec![created, everything];
        }),
        ..Options::default()
    })
    .await;
    let login = app.login("una").await;
    app.patch_authed(
        "/v1/me",
        &token(&login, "access_token"),
        json!({ "nickname": "Una" }),
    )
    .await;
    assert_eq!(app.backend.count("events").await, 3);
    assert_eq!(
        app.backend
            .count("webhook_deliveries WHERE endpoint = 'http://127.0.0.1:9/hook'")
            .await,
        1
    );
    assert_eq!(
        app.backend
            .count("webhook_deliveries WHERE endpoint = 'http://127.0.0.1:9/all'")
            .await,
        3
    );
}

#[tokio::test]
async fn the_purge_keeps_what_a_webhook_still_waits_for() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| {
            let url = "http://127.0.0.1:9/hook".parse().unwrap();
            let mut created = WebhookConfig::new(url, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
            created.events = Some(vec!["person.created".to_owned()]);
            config.webhooks = vec![created];
        }),
        ..Options::default()
    })
    .await;
    app.login("vic").await;
    assert_eq!(app.backend.count("events").await, 2);
    let sql = &app.state.stores.sql;
    // Nothing is old enough yet.
    let now = wxauth::store::sql::events::wall_ms();
    assert_eq!(sql.purge_events(now - 60_000).await.unwrap(), 0);
    // Past the retention: identity.created goes; person.created is still pending for the
    // endpoint (nothing listens there), so it stays.
    assert_eq!(sql.purge_events(now + 60_000).await.unwrap(), 1);
    assert_eq!(app.backend.count("events").await, 1);
    assert_eq!(
        app.backend
            .count("events WHERE type = 'person.created'")
            .await,
        1
    );
    assert_eq!(app.backend.count("webhook_deliveries").await, 1);
}
