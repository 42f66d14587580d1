//! Section 8, changes to employees: Graph reporting changes to N members of the tenant (people
//! shadowsync never made an account for) through the job handler every host uses, with the real
//! LDAP adapter behind a counter of its calls; beside the same jobs as a sweep or an administrator
//! makes them (which always look the account up in AD), same run, same users.

use crate::ldap;
use crate::report::{int, Measure, Row, Section};
use crate::Ctx;
use anyhow::{ensure, Result};
use async_trait::async_trait;
use futures::StreamExt;
use graph_sim::users::BulkUsers;
use graph_sim::{SimClient, SimConfig};
use shadowsync_app::{App, JobHandler, Parts};
use shadowsync_core::{ActualAccount, ObjectId, Operation, Policy};
use shadowsync_directory::{
    AnchorLookup, Directory, DirectoryError, DirectoryObject, LdapDirectory,
};
use shadowsync_queue::{ChangeType, EmbeddedQueue, Job, JobSource};
use shadowsync_state::EmbeddedStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Jobs handled at once (serve's default number of workers).
const CONCURRENCY: usize = 8;

/// The real directory, counting the LDAP operations the application asks of it.
struct Counting {
    inner: LdapDirectory,
    operations: AtomicUsize,
}

impl Counting {
    fn count(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }
    fn take(&self) -> usize {
        self.operations.swap(0, Ordering::Relaxed)
    }
}

#[async_trait]
impl Directory for Counting {
    async fn find_by_anchor(&self, anchor: &str) -> Result<Vec<ActualAccount>, DirectoryError> {
        self.count();
        self.inner.find_by_anchor(anchor).await
    }
    async fn find_by_sam_account_name(
        &self,
        sam: &str,
    ) -> Result<Option<DirectoryObject>, DirectoryError> {
        self.count();
        self.inner.find_by_sam_account_name(sam).await
    }
    async fn find_by_user_principal_name(
        &self,
        upn: &str,
    ) -> Result<Option<DirectoryObject>, DirectoryError> {
        self.count();
        self.inner.find_by_user_principal_name(upn).await
    }
    async fn read_account(&self, dn: &str) -> Result<Option<ActualAccount>, DirectoryError> {
        self.count();
        self.inner.read_account(dn).await
    }
    async fn list_accounts(&self, ou: &str) -> Result<Vec<ActualAccount>, DirectoryError> {
        self.count();
        self.inner.list_accounts(ou).await
    }
    async fn apply(
        &self,
        account: Option<&ActualAccount>,
        plan: &[Operation],
        policy: &Policy,
    ) -> Result<Option<String>, DirectoryError> {
        self.count();
        self.inner.apply(account, plan, policy).await
    }
    fn anchor_lookup(&self) -> Option<AnchorLookup> {
        self.inner.anchor_lookup()
    }
    async fn stamp_indexed_anchors(&self) -> Result<usize, DirectoryError> {
        self.count();
        Directory::stamp_indexed_anchors(&self.inner).await
    }
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let samba = ctx.samba;
    let mut conn = ldap::connect(samba).await?;
    let name = |what: &str| format!("bench-{}-employees-{what}", ctx.tag);
    let guests_ou = ldap::create_ou(&mut conn, &samba.base_dn, &name("guests")).await?;
    let disabled_ou = ldap::create_ou(&mut conn, &samba.base_dn, &name("disabled")).await?;
    let result = measure(ctx, &guests_ou, &disabled_ou).await;
    let conn = ldap::connect(samba).await?;
    ldap::delete_ou(&conn, &guests_ou).await?;
    ldap::delete_ou(&conn, &disabled_ou).await?;
    result
}

/// Handles one job per user, [`CONCURRENCY`] at a time; returns the time taken.
async fn handle_all(
    app: &App,
    users: &[ObjectId],
    job: impl Fn(ObjectId) -> Job,
) -> Result<Duration> {
    let started = Instant::now();
    let mut results = futures::stream::iter(users.iter().cloned().map(job))
        .map(|job| async move { app.jobs.handle(&job).await })
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = results.next().await {
        if let Err(e) = result {
            anyhow::bail!("an employee's job failed: {}", e.reason);
        }
    }
    Ok(started.elapsed())
}

async fn measure(ctx: &Ctx, guests_ou: &str, disabled_ou: &str) -> Result<Section> {
    let n = if ctx.args.smoke { 100 } else { 10_000 };
    let mut section = Section::new("employees", format!("Changes to {} employees", int(n)));
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());
    let created = graph
        .bulk_users(&BulkUsers {
            guests: 0,
            members: n,
            prefix: format!("{}emp", ctx.tag),
            ..Default::default()
        })
        .await?;
    let users = created
        .members
        .iter()
        .map(|id| ObjectId::parse(id))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = Policy::new(guests_ou, disabled_ou);
    let directory = Arc::new(Counting {
        inner: LdapDirectory::connect(ctx.samba.directory_config(), &policy).await?,
        operations: AtomicUsize::new(0),
    });
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path().join("state.redb"))?;
    let queue = Arc::new(EmbeddedQueue::new(&store, 10)?);
    let app = App::from_parts(
        Parts::new(
            Arc::new(shadowsync_e2e::graph_client(&sim)?),
            Arc::new(store),
            queue,
        )
        .directory(directory.clone(), policy),
    );
    let lookup = directory.anchor_lookup();
    directory.take();

    let notified = handle_all(&app, &users, |user_id| Job::Converge {
        user_id,
        change_type: Some(ChangeType::Updated),
        subscription_id: None,
        received_at: chrono::Utc::now(),
        source: JobSource::Notification,
    })
    .await?;
    let notified_operations = directory.take();
    let searched = handle_all(&app, &users, |user_id| Job::Converge {
        user_id,
        change_type: None,
        subscription_id: None,
        received_at: chrono::Utc::now(),
        source: JobSource::Admin,
    })
    .await?;
    let searched_operations = directory.take();
    sim.shutdown().await;
    ensure!(
        notified_operations == 0,
        "{notified_operations} LDAP operations for {n} employee changes Graph reported: expected none"
    );
    ensure!(
        searched_operations >= n,
        "the baseline asked AD {searched_operations} times for {n} users: it must look each one up"
    );

    let per_change = |d: Duration| Measure::ms_f(d.as_secs_f64() * 1000.0 / n as f64);
    section.setup = format!(
        "{} members (employees) seeded in the Graph simulator, none with a shadow account or a record. Each gets one converge job as a change notification makes it (`source: notification`, `changeType: updated`), handled by the job handler every host uses ({CONCURRENCY} at a time), with the real LDAP adapter (anchor lookup: {}) behind a wrapper counting every call the application makes to AD. Baseline, same run and users: the same jobs as a sweep or an administrator makes them, which always look the account up in AD.",
        int(n),
        lookup
            .map(|l| format!("{}, {}", l.attribute, if l.indexed { "indexed" } else { "not indexed" }))
            .unwrap_or_else(|| "not reached".into()),
    );
    section.push(
        Row::new(
            format!(
                "{} employee changes Graph reported: time per change",
                int(n)
            ),
            per_change(notified),
        )
        .against("the same jobs looking AD up", per_change(searched))
        .note(format!(
            "{} LDAP operations, against {} for the baseline",
            int(notified_operations),
            int(searched_operations)
        ))
        .headline(),
    );
    section.bounds = String::from(
        "A change Graph reports to a member without a record costs one Graph read (the user, to see that it is a member) and one state read (no record): no LDAP operation, no record written, whatever the size of AD. The baseline's jobs add a search by anchor (indexed where the schema has msDS-ExternalDirectoryObjectId) per user. A guest who becomes a member has a record, and is still looked up and disabled.",
    );
    Ok(section)
}
