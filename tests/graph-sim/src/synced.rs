//! Users kept in step from on-premises AD by Microsoft Entra Connect. Graph cannot create them
//! (nor change their AD-mastered properties), so the control API does what a sync cycle would:
//! `POST /_sim/users/synced` creates one, `PATCH /_sim/users/{id}/synced` applies an AD change.

use base64::Engine;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::clock::graph_time;
use crate::error::{GraphError, GraphResult};
use crate::state::{
    blank_user, ChangeKind, World, USER_ON_PREMISES_PROPERTIES, USER_SYNC_MASTERED_PROPERTIES,
};
use crate::users::{check_upn, check_value, insert_user};
use crate::Sim;

/// A user as Entra Connect provisions it (`POST /_sim/users/synced`, camelCase JSON). Only
/// `onPremisesSamAccountName` is required.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncedUser {
    /// The AD `sAMAccountName`.
    pub on_premises_sam_account_name: String,
    /// The source anchor: base64 of the AD objectGUID's bytes. Derived from `object_guid` when
    /// absent (and from a random GUID when both are absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises_immutable_id: Option<String>,
    /// The AD objectGUID (`8-4-4-4-12` text form); its bytes in AD order (the first three
    /// fields little-endian, as `Guid.ToByteArray()`) make the immutable id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_guid: Option<String>,
    /// The AD UPN. Entra Connect's default rule writes it; its presence blocks conversion to
    /// B2B collaboration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises_user_principal_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises_domain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_premises_distinguished_name: Option<String>,
    /// The cloud UPN; default `<sAMAccountName>@<tenant domain>`. Must be in the tenant domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// Default: the sAMAccountName.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub other_mails: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Default `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    /// `Member` (the default) or `Guest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
}

/// The immutable id Entra Connect derives from an objectGUID: base64 of its bytes as AD stores
/// them (`Guid.ToByteArray()` order).
pub fn immutable_id_from_guid(guid: &Uuid) -> String {
    base64::engine::general_purpose::STANDARD.encode(guid.to_bytes_le())
}

/// Creates the user as an Entra Connect export would, recorded as a change (delta sees it,
/// subscriptions are notified). Returns every stored property.
pub fn create_synced_user(sim: &Sim, spec: &SyncedUser) -> GraphResult<Value> {
    let immutable_id = immutable_id(spec)?;
    let now = sim.now();
    let mut w = sim.world();
    if let Some(other) = user_with_immutable_id(&w, &immutable_id) {
        return Err(GraphError::bad_request(format!(
            "Another object ({other}) already has onPremisesImmutableId '{immutable_id}': Entra Connect would report a duplicate source anchor."
        )));
    }
    let upn = spec.user_principal_name.clone().unwrap_or_else(|| {
        format!(
            "{}@{}",
            spec.on_premises_sam_account_name, sim.config.tenant_domain
        )
    });
    check_upn(sim, &w, &upn, None)?;
    let id = Uuid::new_v4().to_string();
    let mut props = blank_user(&id, now);
    for (k, v) in synced_properties(spec, &immutable_id, &upn)? {
        props.insert(k, v);
    }
    props.insert("onPremisesLastSyncDateTime".into(), json!(graph_time(now)));
    insert_user(&mut w, props.clone(), now, &sim.config.tenant_id);
    drop(w);
    sim.wakeup.notify_one();
    Ok(Value::Object(props))
}

fn immutable_id(spec: &SyncedUser) -> GraphResult<String> {
    let from_guid = match &spec.object_guid {
        Some(g) => Some(immutable_id_from_guid(&Uuid::parse_str(g).map_err(
            |_| GraphError::bad_request(format!("objectGuid '{g}' is not a GUID.")),
        )?)),
        None => None,
    };
    let id = match (&spec.on_premises_immutable_id, from_guid) {
        (Some(given), Some(derived)) if *given != derived => {
            return Err(GraphError::bad_request(format!(
                "onPremisesImmutableId '{given}' is not the base64 of objectGuid (expected '{derived}')."
            )))
        }
        (Some(given), _) => given.clone(),
        (None, Some(derived)) => derived,
        (None, None) => immutable_id_from_guid(&Uuid::new_v4()),
    };
    // Graph's documentation: "The $ and _ characters can't be used" in this property.
    if id.is_empty() || id.contains('$') || id.contains('_') {
        return Err(GraphError::bad_request(format!(
            "Invalid value specified for property 'onPremisesImmutableId' of resource 'User': '{id}'."
        )));
    }
    Ok(id)
}

fn user_with_immutable_id(w: &World, immutable_id: &str) -> Option<String> {
    w.users
        .values()
        .find(|u| u.props.get("onPremisesImmutableId") == Some(&json!(immutable_id)))
        .map(|u| u.id().to_string())
}

/// The properties a sync writes for `spec`, type-checked like Graph's own.
fn synced_properties(
    spec: &SyncedUser,
    immutable_id: &str,
    upn: &str,
) -> GraphResult<Vec<(String, Value)>> {
    let user_type = spec.user_type.clone().unwrap_or_else(|| "Member".into());
    let display_name = spec
        .display_name
        .clone()
        .unwrap_or_else(|| spec.on_premises_sam_account_name.clone());
    let props = vec![
        ("onPremisesSyncEnabled", json!(true)),
        ("onPremisesImmutableId", json!(immutable_id)),
        (
            "onPremisesSamAccountName",
            json!(spec.on_premises_sam_account_name),
        ),
        (
            "onPremisesUserPrincipalName",
            json!(spec.on_premises_user_principal_name),
        ),
        ("onPremisesDomainName", json!(spec.on_premises_domain_name)),
        (
            "onPremisesDistinguishedName",
            json!(spec.on_premises_distinguished_name),
        ),
        ("userPrincipalName", json!(upn)),
        ("mailNickname", json!(spec.on_premises_sam_account_name)),
        ("displayName", json!(display_name)),
        ("givenName", json!(spec.given_name)),
        ("surname", json!(spec.surname)),
        ("mail", json!(spec.mail)),
        ("otherMails", json!(spec.other_mails)),
        ("companyName", json!(spec.company_name)),
        ("jobTitle", json!(spec.job_title)),
        ("department", json!(spec.department)),
        (
            "accountEnabled",
            json!(spec.account_enabled.unwrap_or(true)),
        ),
        ("userType", json!(user_type)),
    ];
    let mut out = Vec::new();
    for (k, v) in props {
        if !k.starts_with("onPremises") {
            check_value(k, &v)?;
        }
        out.push((k.to_string(), v));
    }
    Ok(out)
}

/// A change made in AD reaching Entra ID with the next sync cycle: any AD-mastered property,
/// `onPremises*` property (`onPremisesSyncEnabled: false` stops the sync), `userType` or
/// `otherMails`, bypassing Graph's refusal to change them. Recorded as a change (delta,
/// notifications) when something differs. Returns every stored property.
pub fn apply_sync_update(sim: &Sim, id: &str, changes: &Map<String, Value>) -> GraphResult<Value> {
    let updates = sync_updates(changes)?;
    let now = sim.now();
    let mut w = sim.world();
    let uid = w
        .find_user_id(id)
        .ok_or_else(|| GraphError::resource_not_found(id))?;
    if !w.users[&uid].is_synced() {
        return Err(GraphError::bad_request(format!(
            "User '{id}' is not synchronized from on-premises (onPremisesSyncEnabled is not true)."
        )));
    }
    if let Some((_, Value::String(upn))) = updates.iter().find(|(k, _)| k == "userPrincipalName") {
        check_upn(sim, &w, upn, Some(&uid))?;
    }
    let user = w.users.get_mut(&uid).expect("found above");
    let mut changed = crate::users::set_properties(user, updates);
    if !changed.is_empty() {
        user.props
            .insert("onPremisesLastSyncDateTime".into(), json!(graph_time(now)));
        changed.push("onPremisesLastSyncDateTime".into());
    }
    let props = crate::state::full_props(&user.props);
    if !changed.is_empty() {
        w.record_change(
            &uid,
            ChangeKind::Upsert(changed),
            now,
            &sim.config.tenant_id,
        );
        drop(w);
        sim.wakeup.notify_one();
    }
    Ok(Value::Object(props))
}

/// The names (canonical spelling) and values of a sync update, type-checked.
fn sync_updates(changes: &Map<String, Value>) -> GraphResult<Vec<(String, Value)>> {
    // `onPremisesLastSyncDateTime` is the sync's own stamp, set below.
    let allowed: Vec<&str> = USER_SYNC_MASTERED_PROPERTIES
        .iter()
        .chain(USER_ON_PREMISES_PROPERTIES)
        .chain(&["userType", "otherMails"])
        .copied()
        .filter(|p| *p != "onPremisesLastSyncDateTime")
        .collect();
    let mut out = Vec::new();
    for (k, v) in changes {
        let name = allowed
            .iter()
            .find(|p| p.eq_ignore_ascii_case(k))
            .ok_or_else(|| {
                GraphError::bad_request(format!("Property '{k}' is not written by a sync."))
            })?;
        check_sync_value(name, v)?;
        out.push(((*name).to_string(), v.clone()));
    }
    Ok(out)
}

fn check_sync_value(name: &str, v: &Value) -> GraphResult<()> {
    match name {
        "onPremisesSyncEnabled" if v.is_boolean() || v.is_null() => Ok(()),
        "onPremisesSyncEnabled" => Err(GraphError::bad_request(
            "Invalid value specified for property 'onPremisesSyncEnabled' of resource 'User'.",
        )),
        n if n.starts_with("onPremises") && (v.is_string() || v.is_null()) => Ok(()),
        n if n.starts_with("onPremises") => Err(GraphError::bad_request(format!(
            "Invalid value specified for property '{n}' of resource 'User'."
        ))),
        n => check_value(n, v),
    }
}
