//! The Graph client as the application's [`Graph`] port.

use crate::{GraphClient, GraphError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shadowsync_core::{Clock, GraphUser, ObjectId, UserLookup};
use shadowsync_ports::{
    DeltaCursor, DeltaItem, Graph, GraphIdentity, GroupChange, Member, NewSubscription, Page,
    Subscription, SubscriptionId,
};
use std::sync::Arc;

#[async_trait]
impl Graph for GraphClient {
    async fn user(&self, id: &ObjectId) -> Result<UserLookup, GraphError> {
        GraphClient::user(self, id).await
    }

    async fn user_by_principal_name(&self, upn: &str) -> Result<Option<GraphUser>, GraphError> {
        GraphClient::user_by_principal_name(self, upn).await
    }

    async fn is_member_of(&self, user: &ObjectId, group: &ObjectId) -> Result<bool, GraphError> {
        GraphClient::is_member_of(self, user, group).await
    }

    async fn group_exists(&self, group: &ObjectId) -> Result<bool, GraphError> {
        GraphClient::group_exists(self, group).await
    }

    async fn users_delta(&self, from: &DeltaCursor) -> Result<Page<DeltaItem>, GraphError> {
        GraphClient::users_delta(self, from).await
    }

    async fn guests(&self, next: Option<&str>) -> Result<Page<ObjectId>, GraphError> {
        GraphClient::guests(self, next).await
    }

    async fn group_members(&self, group: &ObjectId) -> Result<Vec<Member>, GraphError> {
        GraphClient::group_members(self, group).await
    }

    async fn group_delta(
        &self,
        group: &ObjectId,
        from: &DeltaCursor,
    ) -> Result<Page<GroupChange>, GraphError> {
        GraphClient::group_delta(self, group, from).await
    }

    async fn create_subscription(
        &self,
        request: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        GraphClient::create_subscription(self, request).await
    }

    async fn subscription(&self, id: &SubscriptionId) -> Result<Option<Subscription>, GraphError> {
        GraphClient::subscription(self, id).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, GraphError> {
        GraphClient::subscriptions(self).await
    }

    async fn renew_subscription(
        &self,
        id: &SubscriptionId,
        expiration: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, GraphError> {
        GraphClient::renew_subscription(self, id, expiration).await
    }

    async fn reauthorize_subscription(&self, id: &SubscriptionId) -> Result<bool, GraphError> {
        GraphClient::reauthorize_subscription(self, id).await
    }

    async fn delete_subscription(&self, id: &SubscriptionId) -> Result<(), GraphError> {
        GraphClient::delete_subscription(self, id).await
    }

    fn identity(&self) -> GraphIdentity {
        GraphClient::identity(self)
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.server_clock()
    }

    fn take_throttled(&self) -> u64 {
        GraphClient::take_throttled(self)
    }
}
