//! The test world: a real Samba AD DC (started by `tests/samba/samba-dc.sh ensure`), the Graph
//! simulator in-process, and shadowsync's real adapters wired to both. Assertions read AD through
//! [`AdProbe`], a plain ldap3 connection, never through the adapter under test.

use anyhow::{Context, Result};
use graph_sim::{RunningSim, SimClient, SimConfig};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use secrecy::SecretString;
use shadowsync_app::Converger;
use shadowsync_core::partner::ObjectGuid;
use shadowsync_core::{ManualClock, ObjectId, Policy};
use shadowsync_directory::{DirectoryConfig, LdapDirectory};
use shadowsync_graph::{Credential, GraphClient, GraphConfig};
use shadowsync_state::EmbeddedStore;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

pub mod aws;
pub mod host;
pub mod outage;
pub mod rig;
pub mod serve;
pub mod subscriptions;
use std::sync::{Arc, OnceLock};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Connection facts of the test DC, as printed by `samba-dc.sh env`.
#[derive(Debug, Clone)]
pub struct Samba {
    pub ldaps_url: String,
    pub starttls_url: String,
    pub bind_dn: String,
    pub bind_password: String,
    pub ca_file: PathBuf,
    pub base_dn: String,
    pub guests_ou: String,
    pub disabled_ou: String,
}

/// Makes sure the DC runs (installing and provisioning it if needed) and returns its facts.
pub fn samba() -> &'static Samba {
    static SAMBA: OnceLock<Samba> = OnceLock::new();
    SAMBA.get_or_init(|| {
        let script = repo_root().join("tests/samba/samba-dc.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("ensure")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run samba-dc.sh ensure");
        assert!(out.status.success(), "samba-dc.sh ensure failed");
        let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} missing from samba-dc.sh env"))
        };
        Samba {
            ldaps_url: get("SHADOWSYNC_TEST_LDAP_URL"),
            starttls_url: get("SHADOWSYNC_TEST_LDAP_STARTTLS_URL"),
            bind_dn: get("SHADOWSYNC_TEST_BIND_DN"),
            bind_password: get("SHADOWSYNC_TEST_BIND_PASSWORD"),
            ca_file: get("SHADOWSYNC_TEST_CA_FILE").into(),
            base_dn: get("SHADOWSYNC_TEST_BASE_DN"),
            guests_ou: get("SHADOWSYNC_TEST_GUESTS_OU"),
            disabled_ou: get("SHADOWSYNC_TEST_DISABLED_OU"),
        }
    })
}

impl Samba {
    pub fn policy(&self) -> Policy {
        Policy::new(&self.guests_ou, &self.disabled_ou)
    }

    pub fn directory_config(&self) -> DirectoryConfig {
        let mut c = DirectoryConfig::new(
            &self.ldaps_url,
            &self.bind_dn,
            SecretString::from(self.bind_password.clone()),
        );
        c.ca_file = Some(self.ca_file.clone());
        c
    }
}

/// A unique, lowercase token for names that must not clash between tests or runs.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// An active guest as Graph returns one, with a unique address and a fresh objectId, for tests
/// that drive the directory adapter without Graph.
pub fn guest(local: &str, display: &str) -> shadowsync_core::GraphUser {
    shadowsync_core::GraphUser {
        id: ObjectId::parse(&uuid::Uuid::new_v4().to_string()).expect("a GUID"),
        user_principal_name: Some(format!(
            "{local}_{}.example.com#EXT#@contoso.onmicrosoft.com",
            unique()
        )),
        display_name: Some(display.into()),
        user_type: Some("Guest".into()),
        account_enabled: Some(true),
        ..Default::default()
    }
}

/// Graph simulator + Samba + shadowsync's adapters and converge step.
pub struct World {
    pub samba: &'static Samba,
    pub sim: RunningSim,
    pub graph: SimClient,
    pub converger: Arc<Converger>,
    pub probe: AdProbe,
    /// The converger's clock: starts now, moves only when a test moves it.
    pub clock: Arc<ManualClock>,
    _state_dir: tempfile::TempDir,
}

impl World {
    pub async fn start() -> Result<Self> {
        Self::with_policy(samba().policy()).await
    }

    pub async fn with_policy(policy: Policy) -> Result<Self> {
        let samba = samba();
        let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
        let graph = SimClient::new(sim.base_url(), sim.config());
        let state_dir = tempfile::tempdir()?;
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let store = EmbeddedStore::open(state_dir.path().join("state.redb"))?;
        let queue = Arc::new(shadowsync_queue::EmbeddedQueue::new(&store, 8)?);
        let directory = Arc::new(LdapDirectory::connect(samba.directory_config(), &policy).await?);
        let app = shadowsync_app::App::from_parts(
            shadowsync_app::Parts::new(Arc::new(graph_client(&sim)?), Arc::new(store), queue)
                .directory(directory, policy)
                .clock(clock.clone()),
        );
        let converger = app.converger()?.clone();
        Ok(Self {
            samba,
            sim,
            graph,
            converger,
            probe: AdProbe::connect(samba).await?,
            clock,
            _state_dir: state_dir,
        })
    }

    /// Invites a guest with a unique address; returns their objectId.
    pub async fn invite(&self, local: &str, display_name: &str) -> Result<ObjectId> {
        invite_guest(&self.graph, local, display_name).await
    }
}

/// Invites a guest into the simulator with a unique address (`<local>@<unique>.example.com`);
/// returns their objectId.
pub async fn invite_guest(graph: &SimClient, local: &str, display_name: &str) -> Result<ObjectId> {
    let user = graph
        .invite(&format!("{local}@{}.example.com", unique()), display_name)
        .await?;
    let id = user["invitedUser"]["id"]
        .as_str()
        .or_else(|| user["id"].as_str())
        .context("invitation has no user id")?;
    Ok(ObjectId::parse(id)?)
}

/// Whether an entry's `userAccountControl` leaves it enabled.
pub fn is_enabled(entry: &RawEntry) -> bool {
    text(entry, "userAccountControl")
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v & shadowsync_core::account::uac::ACCOUNTDISABLE == 0)
}

/// shadowsync's Graph client pointed at the simulator, with quick retries.
pub fn graph_client(sim: &RunningSim) -> Result<GraphClient> {
    let c = sim.config();
    let mut config = GraphConfig::new(
        &c.tenant_id,
        &c.client_id,
        Credential::secret(&c.client_secret),
    );
    config.login_endpoint = sim.base_url().parse()?;
    config.graph_endpoint = sim.base_url().parse()?;
    config.base_backoff = std::time::Duration::from_millis(20);
    Ok(GraphClient::new(config)?)
}

/// Raw LDAP access for assertions: everything as bytes, nothing interpreted by shadowsync.
pub struct AdProbe {
    ldap: Ldap,
    base_dn: String,
}

/// An entry's attributes, names lower-cased, values as bytes, sorted for comparison.
pub type RawEntry = BTreeMap<String, Vec<Vec<u8>>>;

impl AdProbe {
    pub async fn connect(samba: &Samba) -> Result<Self> {
        let tls = shadowsync_directory::tls_client_config(Some(&samba.ca_file))?;
        let settings = LdapConnSettings::new().set_config(tls);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &samba.ldaps_url).await?;
        ldap3::drive!(conn);
        ldap.simple_bind(&samba.bind_dn, &samba.bind_password)
            .await?
            .success()?;
        Ok(Self {
            ldap,
            base_dn: samba.base_dn.clone(),
        })
    }

    /// Entries matching a raw filter anywhere in the domain, with all user and operational
    /// attributes.
    pub async fn search(&mut self, filter: &str) -> Result<Vec<(String, RawEntry)>> {
        let base = self.base_dn.clone();
        self.search_in(&base, filter).await
    }

    /// The same under `base` only: a domain-wide search stops at the DC's size limit (1,000)
    /// once the tests have made more accounts than that.
    pub async fn search_in(&mut self, base: &str, filter: &str) -> Result<Vec<(String, RawEntry)>> {
        let (entries, _) = self
            .ldap
            .search(base, Scope::Subtree, filter, vec!["*", "+"])
            .await?
            .success()?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let e = SearchEntry::construct(e);
                let mut raw = RawEntry::new();
                for (k, vs) in e.attrs {
                    raw.entry(k.to_lowercase())
                        .or_default()
                        .extend(vs.into_iter().map(String::into_bytes));
                }
                for (k, vs) in e.bin_attrs {
                    raw.entry(k.to_lowercase()).or_default().extend(vs);
                }
                for vs in raw.values_mut() {
                    vs.sort();
                }
                (e.dn, raw)
            })
            .collect())
    }

    /// The one account carrying `User_<id>`, if any.
    pub async fn by_anchor(&mut self, object_id: &str) -> Result<Option<(String, RawEntry)>> {
        let filter = format!(
            "(adminDescription={})",
            ldap3::ldap_escape(format!("User_{object_id}"))
        );
        let mut found = self.search(&filter).await?;
        anyhow::ensure!(
            found.len() <= 1,
            "{} objects carry the anchor of {object_id}",
            found.len()
        );
        Ok(found.pop())
    }

    pub async fn add(&mut self, dn: &str, attrs: Vec<(&str, &str)>) -> Result<()> {
        let attrs = attrs
            .into_iter()
            .map(|(k, v)| {
                (
                    k.as_bytes().to_vec(),
                    HashSet::from([v.as_bytes().to_vec()]),
                )
            })
            .collect();
        self.ldap.add(dn, attrs).await?.success()?;
        Ok(())
    }

    /// Creates an OU of its own under the domain, for tests that must count what is in it.
    pub async fn ou(&mut self, name: &str) -> Result<String> {
        let base = self.base_dn.clone();
        self.ou_under(name, &base).await
    }

    /// The same under `parent`; `name` may hold any character (it is escaped).
    pub async fn ou_under(&mut self, name: &str, parent: &str) -> Result<String> {
        let dn = shadowsync_core::dn::child("OU", &format!("{name} {}", unique()), parent);
        self.add(&dn, vec![("objectClass", "organizationalUnit")])
            .await?;
        Ok(dn)
    }

    /// The `objectGUID` of the object at `dn`.
    pub async fn guid(&mut self, dn: &str) -> Result<ObjectGuid> {
        let (entries, _) = self
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["objectGUID"])
            .await?
            .success()?;
        let entry = SearchEntry::construct(entries.into_iter().next().context("no entry")?);
        let bytes = entry.bin_attrs.get("objectGUID").and_then(|v| v.first());
        bytes
            .and_then(|b| ObjectGuid::from_ad_bytes(b))
            .context("no objectGUID of 16 bytes")
    }

    /// Moves `dn` under `ou`, keeping its RDN; returns the new DN.
    pub async fn move_to(&mut self, dn: &str, ou: &str) -> Result<String> {
        let value = shadowsync_core::dn::first_value(dn).context("an RDN")?;
        let rdn = format!("CN={}", shadowsync_core::dn::escape_value(&value));
        self.ldap
            .modifydn(dn, &rdn, true, Some(ou))
            .await?
            .success()?;
        Ok(format!("{rdn},{ou}"))
    }

    pub async fn delete(&mut self, dn: &str) -> Result<()> {
        self.ldap.delete(dn).await?.success()?;
        Ok(())
    }

    pub async fn replace(&mut self, dn: &str, attribute: &str, value: &str) -> Result<()> {
        let m = Mod::Replace(
            attribute.as_bytes().to_vec(),
            HashSet::from([value.as_bytes().to_vec()]),
        );
        self.ldap.modify(dn, vec![m]).await?.success()?;
        Ok(())
    }
}

/// The first value of an attribute as text.
pub fn text(entry: &RawEntry, attribute: &str) -> Option<String> {
    entry
        .get(&attribute.to_lowercase())
        .and_then(|v| v.first())
        .map(|b| String::from_utf8_lossy(b).into_owned())
}
