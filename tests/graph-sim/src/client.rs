//! A small typed client for tests, the demo and benchmarks: gets (and on 401, refreshes) its own
//! token with the client secret, calls Graph routes and the `/_sim` control API.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::faults::{FaultRule, FaultStats};
use crate::state::{RetryAfterStyle, StaleDeltaTokens, Switches};
use crate::SimConfig;

/// The three delta switches for [`SimClient::set_delta_quirks`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaQuirks {
    /// `deltaDuplicates`: items appear twice in a round.
    pub duplicates: bool,
    /// `deltaPartialItems`: only changed properties in incremental rounds; never-set ones
    /// omitted.
    pub partial_items: bool,
    /// `deltaEmptyPages`: empty pages with a nextLink before and between the real ones.
    pub empty_pages: bool,
}

/// One complete delta round: the items of all its pages, and the deltaLink that ended it.
#[derive(Debug, Clone, Default)]
pub struct DeltaRound {
    pub items: Vec<Value>,
    pub delta_link: String,
}

/// The user properties shadowsync reads, for `$select`.
pub const PROJECT_USER_SELECT: &str = "id,userPrincipalName,displayName,givenName,surname,mail,otherMails,userType,externalUserState,accountEnabled,creationType,deletedDateTime";

pub struct SimClient {
    base: String,
    http: reqwest::Client,
    config: SimConfig,
    token: Mutex<Option<String>>,
}

/// Percent-encodes one path segment (UPNs of guests contain `#`).
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SimClient {
    pub fn new(base_url: impl Into<String>, config: &SimConfig) -> Self {
        SimClient {
            base: base_url.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            config: config.clone(),
            token: Mutex::new(None),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Requests a new access token with the client secret.
    pub async fn fetch_token(&self) -> Result<String> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.base, self.config.tenant_id);
        let resp = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", self.config.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("token request failed: {status} {body}");
        }
        body["access_token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("no access_token in {body}"))
    }

    /// The cached token, fetching one when there is none.
    pub async fn token(&self) -> Result<String> {
        let mut t = self.token.lock().await;
        if let Some(tok) = t.as_ref() {
            return Ok(tok.clone());
        }
        let tok = self.fetch_token().await?;
        *t = Some(tok.clone());
        Ok(tok)
    }

    /// A raw authenticated Graph call (`path` like `/v1.0/users`). On 401 the token is
    /// refreshed once (simulated time may have expired it). A `POST`/`PUT`/`PATCH` without a
    /// body is sent with `Content-Length: 0` (else Graph, and the simulator, answer 411).
    pub async fn graph(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        self.graph_with_headers(method, path, body, &[]).await
    }

    /// [`SimClient::graph`] with extra request headers (such as `ConsistencyLevel: eventual`).
    pub async fn graph_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let url = if path.starts_with("http") {
                path.to_string()
            } else {
                format!("{}{}", self.base, path)
            };
            let mut req = self.http.request(method.clone(), url).bearer_auth(&token);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(b) = body {
                req = req.json(b);
            } else if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
                // Graph answers 411 to a bodiless POST without Content-Length, and reqwest
                // sends none by itself: say it explicitly, as a correct client must.
                req = req.header(reqwest::header::CONTENT_LENGTH, 0);
            }
            let resp = req.send().await?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                *self.token.lock().await = None;
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn graph_json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let resp = self.graph(method.clone(), path, body).await?;
        json_or_error(resp, &format!("{method} {path}")).await
    }

    async fn control(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        json_or_error(req.send().await?, &format!("{method} {path}")).await
    }

    /// `GET` of a control API path (`/_sim/...`), its JSON body.
    pub async fn sim_get(&self, path: &str) -> Result<Value> {
        self.control(Method::GET, path, None).await
    }

    /// The subscriptions as the simulator sees them (`GET /_sim/subscriptions`): with
    /// `clientState`, `needsReauthorization`, `paused`, `withheld`, `lastAuthorizedDateTime`.
    pub async fn sim_subscriptions(&self) -> Result<Vec<Value>> {
        let body = self
            .control(Method::GET, "/_sim/subscriptions", None)
            .await?;
        Ok(body["value"].as_array().cloned().unwrap_or_default())
    }

    /// Invites a guest (`POST /invitations`) and returns the created user (project properties).
    pub async fn invite(&self, email: &str, display_name: &str) -> Result<Value> {
        let inv = self
            .graph_json(
                Method::POST,
                "/v1.0/invitations",
                Some(&json!({
                    "invitedUserEmailAddress": email,
                    "invitedUserDisplayName": display_name,
                    "inviteRedirectUrl": "https://myapps.microsoft.com",
                    "sendInvitationMessage": false,
                })),
            )
            .await?;
        let id = inv["invitedUser"]["id"]
            .as_str()
            .context("invitation without invitedUser.id")?;
        // Read through the control API, not `GET /users/{id}`: with `replicationLagSeconds` on,
        // Graph's read would answer 404 for a while. Same shape as `get_user`.
        let raw = self.sim_user(id).await?;
        let mut user = serde_json::Map::new();
        user.insert(
            "@odata.context".into(),
            json!(format!("{}/v1.0/$metadata#users/$entity", self.base)),
        );
        for p in PROJECT_USER_SELECT.split(',') {
            user.insert(p.into(), raw.get(p).cloned().unwrap_or(Value::Null));
        }
        Ok(Value::Object(user))
    }

    /// Every stored property of a user, live or soft-deleted, plus `visibleFrom` (see
    /// `replicationLagSeconds`) — `GET /_sim/users/{id}`, not subject to replication lag.
    pub async fn sim_user(&self, id: &str) -> Result<Value> {
        self.control(
            Method::GET,
            &format!("/_sim/users/{}", encode_segment(id)),
            None,
        )
        .await
    }

    /// Marks the invitation accepted (`externalUserState` = `Accepted`).
    pub async fn accept_invitation(&self, id: &str) -> Result<Value> {
        self.control(
            Method::POST,
            &format!("/_sim/users/{}/accept-invitation", encode_segment(id)),
            None,
        )
        .await
    }

    /// Invites an internal (member) user to B2B collaboration in place (`POST /invitations` with
    /// `invitedUser.id`, no invitation mail); returns the invitation. The user's `mail` must
    /// already be `email`, as Graph requires; `userType` is not changed (PATCH it separately).
    pub async fn invite_internal(&self, id: &str, email: &str) -> Result<Value> {
        self.graph_json(
            Method::POST,
            "/v1.0/invitations",
            Some(&json!({
                "invitedUserEmailAddress": email,
                "inviteRedirectUrl": "https://myapps.microsoft.com",
                "sendInvitationMessage": false,
                "invitedUser": { "id": id },
            })),
        )
        .await
    }

    /// Resets a B2B user's redemption so it redeems again with `email`, the way Microsoft's
    /// "Reset redemption status" procedure goes: first, unless `email` is already on the user,
    /// `PATCH` its `mail` and `otherMails` to `email` (Graph refuses a reset to an address the
    /// user object does not carry); then `POST /invitations` with `resetRedemption: true`.
    /// Returns the invitation; the user is back to `PendingAcceptance`, same object id.
    pub async fn reset_redemption(&self, id: &str, email: &str) -> Result<Value> {
        let user = self.sim_user(id).await?;
        let on_user = user["mail"]
            .as_str()
            .is_some_and(|m| m.eq_ignore_ascii_case(email))
            || user["otherMails"].as_array().is_some_and(|all| {
                all.iter()
                    .filter_map(Value::as_str)
                    .any(|m| m.eq_ignore_ascii_case(email))
            });
        if !on_user {
            self.patch_user(id, json!({ "mail": email, "otherMails": [email] }))
                .await?;
        }
        self.graph_json(
            Method::POST,
            "/v1.0/invitations",
            Some(&json!({
                "invitedUserEmailAddress": email,
                "inviteRedirectUrl": "https://myapps.microsoft.com",
                "sendInvitationMessage": false,
                "resetRedemption": true,
                "invitedUser": { "id": id },
            })),
        )
        .await
    }

    /// Creates a user as Microsoft Entra Connect would (`POST /_sim/users/synced`):
    /// `onPremisesSyncEnabled: true`, its immutable id, sAMAccountName and the rest of `spec`.
    /// Returns every stored property.
    pub async fn create_synced_user(&self, spec: &crate::synced::SyncedUser) -> Result<Value> {
        self.control(
            Method::POST,
            "/_sim/users/synced",
            Some(&serde_json::to_value(spec)?),
        )
        .await
    }

    /// Applies a change made in AD to a synced user, as the next sync cycle would
    /// (`PATCH /_sim/users/{id}/synced`): AD-mastered and `onPremises*` properties, `userType`,
    /// `otherMails`. Returns every stored property.
    pub async fn update_synced_user(&self, id: &str, changes: Value) -> Result<Value> {
        self.control(
            Method::PATCH,
            &format!("/_sim/users/{}/synced", encode_segment(id)),
            Some(&changes),
        )
        .await
    }

    /// `GET /users?$filter=<filter>&$select=<select>`, following `@odata.nextLink` to the end;
    /// with `advanced`, as an advanced query (`ConsistencyLevel: eventual` and `$count=true`,
    /// which some filters need). Returns all matching users.
    pub async fn find_users(
        &self,
        filter: &str,
        select: &str,
        advanced: bool,
    ) -> Result<Vec<Value>> {
        let mut url = format!(
            "/v1.0/users?$filter={}&$select={}",
            encode_segment(filter),
            encode_segment(select)
        );
        if advanced {
            url.push_str("&$count=true");
        }
        let headers: &[(&str, &str)] = if advanced {
            &[("ConsistencyLevel", "eventual")]
        } else {
            &[]
        };
        let mut users = Vec::new();
        loop {
            let resp = self
                .graph_with_headers(Method::GET, &url, None, headers)
                .await?;
            let page = json_or_error(resp, "GET users").await?;
            users.extend(page["value"].as_array().cloned().unwrap_or_default());
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return Ok(users),
            }
        }
    }

    /// `GET /users/{id}?$select=<select>`; `None` on 404.
    pub async fn get_user_select(&self, id: &str, select: &str) -> Result<Option<Value>> {
        let resp = self
            .graph(
                Method::GET,
                &format!("/v1.0/users/{}?$select={select}", encode_segment(id)),
                None,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json_or_error(resp, "GET user").await.map(Some)
    }

    /// Creates many users at once (`POST /_sim/users/bulk`); returns their ids.
    pub async fn bulk_users(
        &self,
        spec: &crate::users::BulkUsers,
    ) -> Result<crate::users::BulkCreated> {
        let v = self
            .control(
                Method::POST,
                "/_sim/users/bulk",
                Some(&serde_json::to_value(spec)?),
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Creates a member user `<mail_nickname>@<tenant domain>`.
    pub async fn create_member(&self, mail_nickname: &str, display_name: &str) -> Result<Value> {
        self.graph_json(
            Method::POST,
            "/v1.0/users",
            Some(&json!({
                "accountEnabled": true,
                "displayName": display_name,
                "mailNickname": mail_nickname,
                "userPrincipalName": format!("{mail_nickname}@{}", self.config.tenant_domain),
                "passwordProfile": { "forceChangePasswordNextSignIn": true, "password": "xWwvJ]6NMw+bWH-d" },
            })),
        )
        .await
    }

    /// `GET /users/{id}?$select=<project properties>`; `None` on 404.
    pub async fn get_user(&self, id: &str) -> Result<Option<Value>> {
        let resp = self
            .graph(
                Method::GET,
                &format!(
                    "/v1.0/users/{}?$select={PROJECT_USER_SELECT}",
                    encode_segment(id)
                ),
                None,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json_or_error(resp, "GET user").await.map(Some)
    }

    pub async fn patch_user(&self, id: &str, changes: Value) -> Result<()> {
        self.graph_json(
            Method::PATCH,
            &format!("/v1.0/users/{}", encode_segment(id)),
            Some(&changes),
        )
        .await
        .map(drop)
    }

    /// Soft delete.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        self.graph_json(
            Method::DELETE,
            &format!("/v1.0/users/{}", encode_segment(id)),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn restore_user(&self, id: &str) -> Result<Value> {
        self.graph_json(
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{id}/restore"),
            None,
        )
        .await
    }

    /// Permanent deletion of a soft-deleted user.
    pub async fn purge_user(&self, id: &str) -> Result<()> {
        self.graph_json(
            Method::DELETE,
            &format!("/v1.0/directory/deletedItems/{id}"),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn create_group(&self, display_name: &str) -> Result<Value> {
        let nick: String = display_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        self.graph_json(
            Method::POST,
            "/v1.0/groups",
            Some(&json!({
                "displayName": display_name,
                "mailEnabled": false,
                "mailNickname": if nick.is_empty() { "group".to_string() } else { nick },
                "securityEnabled": true,
            })),
        )
        .await
    }

    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        self.graph_json(
            Method::DELETE,
            &format!("/v1.0/groups/{}", encode_segment(group_id)),
            None,
        )
        .await
        .map(drop)
    }

    /// Adds a user or group to a group.
    pub async fn add_member(&self, group_id: &str, member_id: &str) -> Result<()> {
        let body = json!({ "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{member_id}") });
        self.graph_json(
            Method::POST,
            &format!("/v1.0/groups/{group_id}/members/$ref"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    pub async fn remove_member(&self, group_id: &str, member_id: &str) -> Result<()> {
        self.graph_json(
            Method::DELETE,
            &format!("/v1.0/groups/{group_id}/members/{member_id}/$ref"),
            None,
        )
        .await
        .map(drop)
    }

    /// Follows a delta round from `url` (an initial delta request path or a saved deltaLink)
    /// through its nextLinks to the deltaLink. A non-2xx answer is an error carrying its body.
    pub async fn delta_round(&self, url: &str) -> Result<DeltaRound> {
        let mut round = DeltaRound::default();
        let mut next = url.to_string();
        loop {
            let resp = self.graph(Method::GET, &next, None).await?;
            let page = json_or_error(resp, "GET delta").await?;
            round
                .items
                .extend(page["value"].as_array().cloned().unwrap_or_default());
            if let Some(link) = page["@odata.deltaLink"].as_str() {
                round.delta_link = link.to_string();
                return Ok(round);
            }
            next = page["@odata.nextLink"]
                .as_str()
                .with_context(|| format!("delta page without nextLink or deltaLink: {page}"))?
                .to_string();
        }
    }

    /// The first round of `GET /groups/delta`, with `$select` when given (name `members` to
    /// get `members@delta`) and, when `ids` is not empty, `$filter=id eq '…' or id eq '…'`.
    /// Continue with `delta_round(&round.delta_link)`.
    pub async fn groups_delta(&self, select: Option<&str>, ids: &[&str]) -> Result<DeltaRound> {
        let mut params = Vec::new();
        if let Some(select) = select {
            params.push(format!("$select={}", encode_segment(select)));
        }
        if !ids.is_empty() {
            let filter: Vec<String> = ids.iter().map(|id| format!("id eq '{id}'")).collect();
            params.push(format!("$filter={}", encode_segment(&filter.join(" or "))));
        }
        let mut url = "/v1.0/groups/delta".to_string();
        if !params.is_empty() {
            url = format!("{url}?{}", params.join("&"));
        }
        self.delta_round(&url).await
    }

    pub async fn advance_time(&self, seconds: f64) -> Result<Value> {
        self.control(
            Method::POST,
            "/_sim/time/advance",
            Some(&json!({ "seconds": seconds })),
        )
        .await
    }

    /// Adds a fault rule; returns its id.
    pub async fn set_fault(&self, rule: FaultRule) -> Result<u64> {
        let v = self
            .control(
                Method::POST,
                "/_sim/faults",
                Some(&serde_json::to_value(rule)?),
            )
            .await?;
        v["id"].as_u64().context("fault id")
    }

    /// Injected faults so far, and retries that came before their `Retry-After`.
    pub async fn fault_stats(&self) -> Result<FaultStats> {
        let v = self
            .control(Method::GET, "/_sim/faults/stats", None)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.control(Method::DELETE, "/_sim/faults", None)
            .await
            .map(drop)
    }

    /// Sets switches by name (camelCase, see [`Switches`]); the switches not named keep their
    /// values (the control API merges). Returns all switches.
    pub async fn set_switches(&self, switches: Value) -> Result<Value> {
        self.control(Method::POST, "/_sim/switches", Some(&switches))
            .await
    }

    pub async fn set_notifications_lost(&self, lost: bool) -> Result<()> {
        self.set_switches(json!({ "notificationsLost": lost }))
            .await
            .map(drop)
    }

    /// The current switches (`GET /_sim/switches`).
    pub async fn switches(&self) -> Result<Switches> {
        let v = self.control(Method::GET, "/_sim/switches", None).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// `replicationLagSeconds`: single-user reads answer 404 for this many simulated seconds
    /// after a user's last change (0 = off).
    pub async fn set_replication_lag(&self, seconds: f64) -> Result<()> {
        self.set_switches(json!({ "replicationLagSeconds": seconds }))
            .await
            .map(drop)
    }

    /// `retryAfter`: how 429/503 answers write `Retry-After`.
    pub async fn set_retry_after_style(&self, style: RetryAfterStyle) -> Result<()> {
        self.set_switches(json!({ "retryAfter": style }))
            .await
            .map(drop)
    }

    /// `spontaneousReauthorizationSeconds`: every subscription gets `reauthorizationRequired`
    /// (delivery paused) this many simulated seconds after it was created, reauthorized or
    /// renewed (0 = off).
    pub async fn set_spontaneous_reauthorization(&self, seconds: f64) -> Result<()> {
        self.set_switches(json!({ "spontaneousReauthorizationSeconds": seconds }))
            .await
            .map(drop)
    }

    /// `deltaDuplicates`, `deltaPartialItems`, `deltaEmptyPages` at once.
    pub async fn set_delta_quirks(&self, quirks: DeltaQuirks) -> Result<()> {
        self.set_switches(json!({
            "deltaDuplicates": quirks.duplicates,
            "deltaPartialItems": quirks.partial_items,
            "deltaEmptyPages": quirks.empty_pages,
        }))
        .await
        .map(drop)
    }

    /// `staleDeltaTokens`: with `Some`, every delta link minted so far answers that error
    /// (calling it again invalidates again); `None` turns it off.
    pub async fn set_stale_delta_tokens(&self, stale: Option<StaleDeltaTokens>) -> Result<()> {
        self.set_switches(json!({ "staleDeltaTokens": stale }))
            .await
            .map(drop)
    }

    /// `permissionRemoved`: every Graph call answers 403 `Authorization_RequestDenied` and no
    /// change notification is delivered while it is on.
    pub async fn set_permission_removed(&self, removed: bool) -> Result<()> {
        self.set_switches(json!({ "permissionRemoved": removed }))
            .await
            .map(drop)
    }

    /// Every delivery attempt so far (validation handshakes, notifications, lifecycle events).
    pub async fn delivery_log(&self) -> Result<Vec<Value>> {
        let v = self.control(Method::GET, "/_sim/deliveries", None).await?;
        Ok(v["value"].as_array().cloned().unwrap_or_default())
    }

    /// Polls the delivery log until `pred` holds for it, or fails after `timeout` (real time).
    pub async fn wait_for_log<F>(&self, timeout: Duration, pred: F) -> Result<Vec<Value>>
    where
        F: Fn(&[Value]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.delivery_log().await?;
            if pred(&log) {
                return Ok(log);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "delivery log did not reach the expected state in {timeout:?}: {}",
                    serde_json::to_string_pretty(&log)?
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn trigger_lifecycle(&self, subscription_id: &str, event: &str) -> Result<Value> {
        self.control(
            Method::POST,
            &format!("/_sim/subscriptions/{subscription_id}/lifecycle"),
            Some(&json!({ "lifecycleEvent": event })),
        )
        .await
    }

    pub async fn reset(&self) -> Result<()> {
        self.control(Method::POST, "/_sim/reset", None)
            .await
            .map(drop)
    }
}

/// Parses a JSON body of a 2xx answer (`null` for 204), or turns any other status into an
/// error carrying the body.
async fn json_or_error(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{what} failed: {status} {text}");
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).or(Ok(Value::String(text)))
}
