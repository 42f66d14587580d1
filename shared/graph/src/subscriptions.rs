//! Change-notification subscriptions.

use crate::{GraphClient, GraphError};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;
use shadowsync_ports::{NewSubscription, Subscription, SubscriptionId};

const SUBSCRIPTIONS_PATH: &str = "/v1.0/subscriptions";

/// Graph's timestamp format (RFC 3339, UTC, `Z`).
fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn path(id: &SubscriptionId, suffix: &str) -> String {
    // A SubscriptionId holds only [A-Za-z0-9_-]: nothing to escape, nothing to steer.
    format!("{SUBSCRIPTIONS_PATH}/{id}{suffix}")
}

fn decode(action: &str, value: serde_json::Value) -> Result<Subscription, GraphError> {
    // serde's message names the field and type, never a string value, so no secret leaks.
    serde_json::from_value(value).map_err(|e| GraphError::Decode(format!("{action}: {e}").into()))
}

impl GraphClient {
    pub async fn create_subscription(
        &self,
        request: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        let body = json!({
            "changeType": request.change_type,
            "notificationUrl": request.notification_url,
            "lifecycleNotificationUrl": request.lifecycle_url,
            "resource": request.resource,
            "expirationDateTime": graph_time(request.expiration),
            "clientState": request.client_state.expose_secret(),
            "latestSupportedTlsVersion": "v1_2",
        });
        let value = self
            .send(Method::POST, SUBSCRIPTIONS_PATH, Some(&body))
            .await?;
        decode("the created subscription", value)
    }

    pub async fn subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, GraphError> {
        match self.send(Method::GET, &path(id, ""), None).await {
            Ok(value) => decode("the subscription", value).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every subscription of this application, following nextLinks.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, GraphError> {
        let mut next = SUBSCRIPTIONS_PATH.to_string();
        let mut all = Vec::new();
        loop {
            let page = self.page::<Subscription>(&next).await?;
            all.extend(page.items);
            match page.next_link {
                Some(link) => next = link,
                None => return Ok(all),
            }
        }
    }

    pub async fn renew_subscription(
        &self,
        id: &SubscriptionId,
        expiration: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, GraphError> {
        let body = json!({ "expirationDateTime": graph_time(expiration) });
        match self.send(Method::PATCH, &path(id, ""), Some(&body)).await {
            // Graph answers with the subscription; trust its expiration over ours if present.
            Ok(value) => Ok(Some(
                value["expirationDateTime"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map_or(expiration, |t| t.with_timezone(&Utc)),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn reauthorize_subscription(&self, id: &SubscriptionId) -> Result<bool, GraphError> {
        match self
            .send(Method::POST, &path(id, "/reauthorize"), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_subscription(&self, id: &SubscriptionId) -> Result<(), GraphError> {
        match self.send(Method::DELETE, &path(id, ""), None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_times() {
        let id = SubscriptionId::parse("7f105c7d-2dc5-4530-97cd-4e7ae6534c07").unwrap();
        assert_eq!(
            path(&id, "/reauthorize"),
            "/v1.0/subscriptions/7f105c7d-2dc5-4530-97cd-4e7ae6534c07/reauthorize"
        );
        let t = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.1234567Z").unwrap();
        assert_eq!(graph_time(t.with_timezone(&Utc)), "2030-01-02T03:04:05Z");
    }
}
