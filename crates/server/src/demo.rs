//! `wxauth demo`: the service, the WeChat simulator and SQLite in one process, with a
//! walkthrough of `curl` commands that work exactly as printed.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::net::TcpListener;
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig};

use crate::config::{AppConfig, Config, DatabaseUrl, WebhookConfig};
use crate::startup::Application;
use crate::telemetry;

/// Where the demo keeps its data unless told otherwise.
pub const DEMO_DATABASE_URL: &str = "sqlite://wxauth-demo.db";

/// The demo's fixed data key. Acceptable only because the demo talks to a simulator and holds
/// no real session_keys; `serve` has no default key and refuses to start without one.
const DEMO_DATA_KEY: &str = "ZGVtby1vbmx5LWRhdGEta2V5LW5vdC1mb3ItcHJvZCE=";

/// The last line of the walkthrough (tests read up to it).
pub const WALKTHROUGH_END: &str = "# End of walkthrough. Press Ctrl-C to stop the demo.";

/// Runs the demo until Ctrl-C; events go to `webhook` (URL and secret) when given.
pub async fn run(
    listen: SocketAddr,
    database: String,
    sim_listen: SocketAddr,
    webhook: Option<(url::Url, String)>,
) -> anyhow::Result<()> {
    let mut config = Config::default();
    telemetry::init(&config.log);

    // A fixed simulator port keeps the example mini program's config valid across restarts;
    // when it is taken, any free port will do (the walkthrough prints the real one).
    let sim_listener = match TcpListener::bind(sim_listen).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind((sim_listen.ip(), 0))
            .await
            .context("Failed to bind the simulator")?,
    };
    let sim = wechat_sim::spawn(SimConfig::default(), sim_listener)
        .await
        .context("Failed to start the simulator")?;

    config.server.listen = listen;
    config.database.url = DatabaseUrl::from(database.as_str());
    config.wechat.api_base = sim.base_url().parse().context("simulator URL")?;
    config.security.data_key = Some(SecretString::from(DEMO_DATA_KEY));
    config.apps = vec![AppConfig {
        app_id: DEMO_APP_ID.to_owned(),
        secret: Some(SecretString::from(DEMO_APP_SECRET)),
        secret_file: None,
        secret_env: None,
    }];
    if let Some((url, secret)) = &webhook {
        config.webhooks = vec![WebhookConfig::new(url.clone(), secret)];
    }
    let app = Application::build(config).await?;
    let api = format!("http://{}", app.local_addr());
    if let Some((url, _)) = &webhook {
        println!("Events (docs/events.md) go to the webhook {url}, signed with its secret.\n");
    }
    println!("{}", walkthrough(&api, &sim.base_url(), &database));
    let result = app.run_until_stopped().await;
    sim.shutdown().await;
    result.context("the server stopped with an error")
}

/// The banner and the copy-paste walkthrough.
pub fn walkthrough(api: &str, sim: &str, database: &str) -> String {
    let app = DEMO_APP_ID;
    let json = "-H 'Content-Type: application/json'";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "wxauth demo: running against the built-in WeChat SIMULATOR, not real WeChat.\n\
         \n  API        {api}\n  simulator  {sim}  (mini program {app})\n  database   {database}\n\
         \nTry it: paste these lines into a shell (bash or zsh; needs curl and sed).\n"
    );
    let steps: [(&str, String); 7] = [
        (
            "1. The mini program calls wx.login; the simulator plays WeChat and gives a code:",
            format!(
                "CODE=$(curl -s -X POST {sim}/sim/login {json} -d '{{\"appid\":\"{app}\",\"user\":\"alice\"}}' | sed -E 's/.*\"code\":\"([^\"]+)\".*/\\1/')"
            ),
        ),
        (
            "2. It sends the code to wxauth, which exchanges it with WeChat and returns tokens:",
            format!(
                "LOGIN=$(curl -s -X POST {api}/v1/auth/login {json} -d \"{{\\\"code\\\":\\\"$CODE\\\"}}\"); echo \"$LOGIN\""
            ),
        ),
        (
            "3. Keep the tokens (a mini program keeps them in wx.setStorageSync):",
            "TOKEN=$(printf '%s' \"$LOGIN\" | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/'); REFRESH=$(printf '%s' \"$LOGIN\" | sed -E 's/.*\"refresh_token\":\"([^\"]+)\".*/\\1/')".to_owned(),
        ),
        (
            "4. Who am I?",
            format!("curl -s {api}/v1/me -H \"Authorization: Bearer $TOKEN\"; echo"),
        ),
        (
            "5. Send encrypted user info (wx.getUserInfo's encryptedData, iv, rawData, signature); wxauth decrypts it with the session_key it kept:",
            format!(
                "curl -s -X POST {sim}/sim/userinfo {json} -d '{{\"appid\":\"{app}\",\"user\":\"alice\",\"profile\":{{\"nickName\":\"小明😀\",\"city\":\"Shenzhen\"}}}}' | curl -s -X POST {api}/v1/me/userinfo -H \"Authorization: Bearer $TOKEN\" {json} --data-binary @-; echo"
            ),
        ),
        (
            "6. Rotate the tokens with the refresh token (each refresh token works once):",
            format!(
                "curl -s -X POST {api}/v1/auth/refresh {json} -d \"{{\\\"refresh_token\\\":\\\"$REFRESH\\\"}}\"; echo"
            ),
        ),
        (
            "7. Log out; the session is revoked at once (the old token now gets 401 token_revoked):",
            format!(
                "curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST {api}/v1/auth/logout -H \"Authorization: Bearer $TOKEN\"; curl -s {api}/v1/me -H \"Authorization: Bearer $TOKEN\"; echo"
            ),
        ),
    ];
    for (comment, command) in steps {
        let _ = writeln!(out, "# {comment}\n{command}\n");
    }
    out.push_str(WALKTHROUGH_END);
    out
}
