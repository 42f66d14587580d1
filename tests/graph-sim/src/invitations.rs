//! `POST /v1.0/invitations`, as Entra ID B2B collaboration handles it:
//! - a new address creates a guest;
//! - an address a B2B user already has answers that same user (no second user is made), while
//!   an address an internal user holds is refused — that user would have to be converted;
//! - `invitedUser: {"id"}` converts an existing internal user to B2B collaboration in place
//!   ("Invite internal users to B2B collaboration"): same object id, UPN and memberships,
//!   `userType` untouched; its `mail` must already be the external address;
//! - `resetRedemption: true` with `invitedUser.id` lets a B2B user redeem again, with an address
//!   that must already be on the user (`mail` or `otherMails`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::clock::graph_time;
use crate::error::{GraphError, GraphResult};
use crate::state::{ChangeKind, UserRecord, World};
use crate::users::{body_object, context, insert_user, new_guest, str_field};
use crate::Sim;

/// What Graph answers when the invited address is on no property of the user being converted
/// or reset (captured from Graph by users; the apostrophes are typographic in the original).
pub const ADDRESS_NOT_ON_USER: &str = "The email you’re using to invite this user doesn’t match any emails on the user object. Please add this email to the user object and try again.";

/// The request body, validated.
#[derive(Debug)]
struct InvitationRequest {
    email: String,
    redirect: String,
    display_name: Option<String>,
    user_type: String,
    send_message: bool,
    reset_redemption: bool,
    invited_user_id: Option<String>,
    message_info: Value,
}

/// Invitation errors carry the `BadRequest` code, as Graph's invitation manager answers.
fn invitation_error(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// `POST /v1.0/invitations` → 201 with the invitation, for each of the cases in the module doc.
pub async fn create_invitation(
    State(sim): State<Arc<Sim>>,
    body: Option<Json<Value>>,
) -> GraphResult<Response> {
    let req = parse_request(&body_object(body)?)?;
    let now = sim.now();
    let mut w = sim.world();
    let user_id = match &req.invited_user_id {
        Some(id) => invite_existing_user(&sim, &mut w, id, &req, now)?,
        None => invite_address(&sim, &mut w, &req, now)?,
    };
    drop(w);
    sim.wakeup.notify_one();
    let body = invitation_body(&sim, &req, &user_id);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn parse_request(body: &Map<String, Value>) -> GraphResult<InvitationRequest> {
    let email = str_field(body, "invitedUserEmailAddress")
        .ok_or_else(|| {
            invitation_error("Invitation cannot be created without invitedUserEmailAddress.")
        })?
        .trim()
        .to_string();
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(invitation_error(
            "The invited user email address is invalid.",
        ));
    }
    let redirect = str_field(body, "inviteRedirectUrl")
        .ok_or_else(|| invitation_error("InviteRedirectUrl is required."))?
        .to_string();
    let user_type = str_field(body, "invitedUserType").unwrap_or("Guest");
    if user_type != "Guest" && user_type != "Member" {
        return Err(invitation_error(format!(
            "Invalid value specified for property 'invitedUserType': '{user_type}'. It must be Guest or Member."
        )));
    }
    let reset_redemption = bool_field(body, "resetRedemption")?;
    let invited_user_id = invited_user_id(body)?;
    if reset_redemption && invited_user_id.is_none() {
        return Err(invitation_error(
            "The invitedUser/id relationship is required when resetRedemption is true.",
        ));
    }
    Ok(InvitationRequest {
        email,
        redirect,
        display_name: str_field(body, "invitedUserDisplayName").map(String::from),
        user_type: user_type.to_string(),
        send_message: bool_field(body, "sendInvitationMessage")?,
        reset_redemption,
        invited_user_id,
        message_info: message_info(body)?,
    })
}

/// An optional Boolean (default `false`); anything else is a model-binding error.
fn bool_field(body: &Map<String, Value>, name: &str) -> GraphResult<bool> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invitation_error(format!(
            "Invalid value specified for property '{name}' of resource 'Invitation'."
        ))),
    }
}

/// `invitedUser: {"id": "..."}`, if present.
fn invited_user_id(body: &Map<String, Value>) -> GraphResult<Option<String>> {
    match body.get("invitedUser") {
        None | Some(Value::Null) => Ok(None),
        Some(user) => user
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.trim().is_empty())
            .map(|id| Some(id.trim().to_string()))
            .ok_or_else(|| {
                invitation_error(
                    "Invalid value specified for property 'invitedUser' of resource 'Invitation'.",
                )
            }),
    }
}

/// `invitedUserMessageInfo` as the response echoes it: the given `messageLanguage`,
/// `customizedMessageBody` and `ccRecipients`, Graph's empty recipient when none is given.
fn message_info(body: &Map<String, Value>) -> GraphResult<Value> {
    let given = match body.get("invitedUserMessageInfo") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(invitation_error(
                "Invalid value specified for property 'invitedUserMessageInfo' of resource 'Invitation'.",
            ))
        }
    };
    let text = |name: &str| -> GraphResult<Value> {
        match given.get(name) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::String(s)) => Ok(json!(s)),
            Some(_) => Err(invitation_error(format!(
                "Invalid value specified for property '{name}' of resource 'InvitedUserMessageInfo'."
            ))),
        }
    };
    let recipients = match given.get("ccRecipients") {
        Some(Value::Array(r)) if !r.is_empty() => Value::Array(r.clone()),
        _ => json!([{ "emailAddress": { "name": null, "address": null } }]),
    };
    Ok(json!({
        "messageLanguage": text("messageLanguage")?,
        "ccRecipients": recipients,
        "customizedMessageBody": text("customizedMessageBody")?,
    }))
}

/// An invitation naming only an address: the B2B user that already has it, or a new guest.
fn invite_address(
    sim: &Sim,
    w: &mut World,
    req: &InvitationRequest,
    now: DateTime<Utc>,
) -> GraphResult<String> {
    if let Some(existing) = user_with_address(w, &req.email) {
        let user = &w.users[&existing];
        if user.is_external() {
            // Re-inviting re-sends the invitation; the user is not touched.
            return Ok(existing);
        }
        return Err(invitation_error(format!(
            "The invited user already exists in the directory as objectID: {existing}. They can use that account to sign in to shared apps and resources."
        )));
    }
    let id = Uuid::new_v4().to_string();
    let display_name = req.display_name.clone().unwrap_or_else(|| {
        req.email
            .split('@')
            .next()
            .unwrap_or(&req.email)
            .to_string()
    });
    let props = new_guest(sim, &id, &req.email, &display_name, &req.user_type, now);
    insert_user(w, props, now, &sim.config.tenant_id);
    Ok(id)
}

/// The live user that signs in with `address`: by UPN, `mail` or `otherMails` (the lookup
/// Microsoft documents for "Determine if a user was already invited").
fn user_with_address(w: &World, address: &str) -> Option<String> {
    w.live_users_sorted()
        .into_iter()
        .find(|u| u.upn().eq_ignore_ascii_case(address) || u.has_address(address))
        .map(|u| u.id().to_string())
}

/// An invitation naming an existing user: conversion of an internal user, reset of a B2B
/// user's redemption, or a plain re-invitation of a B2B user.
fn invite_existing_user(
    sim: &Sim,
    w: &mut World,
    id: &str,
    req: &InvitationRequest,
    now: DateTime<Utc>,
) -> GraphResult<String> {
    let uid = w
        .find_user_id(id)
        .ok_or_else(|| GraphError::resource_not_found(id))?;
    let user = &w.users[&uid];
    if user.is_external() && !req.reset_redemption {
        if !user.has_address(&req.email) {
            return Err(invitation_error(ADDRESS_NOT_ON_USER));
        }
        return Ok(uid);
    }
    if user.is_external() {
        check_reset(user, req)?;
    } else {
        check_conversion(sim, user, req)?;
    }
    mark_pending_acceptance(w, &uid, now, &sim.config.tenant_id);
    Ok(uid)
}

/// A reset lets the user redeem with a new address, which must already be on the user object
/// (Microsoft: "Make sure the new email address is added to the mail or otherMails property").
fn check_reset(user: &UserRecord, req: &InvitationRequest) -> GraphResult<()> {
    if user.has_address(&req.email) {
        Ok(())
    } else {
        Err(invitation_error(ADDRESS_NOT_ON_USER))
    }
}

/// The rules of "Invite internal users to B2B collaboration": the external address is not in a
/// verified domain, it is the user's `mail` already, and the user has no
/// `onPremisesUserPrincipalName` (Entra Connect's default rule writes it; Microsoft blocks the
/// conversion because it "can prevent a user from signing in using external credentials").
fn check_conversion(sim: &Sim, user: &UserRecord, req: &InvitationRequest) -> GraphResult<()> {
    let domain = req.email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if domain.eq_ignore_ascii_case(&sim.config.tenant_domain) {
        return Err(invitation_error(
            "User's email address cannot be in a verified domain. Please change the user's email to enable conversion to a B2B user.",
        ));
    }
    if !user.has_mail(&req.email) {
        return Err(invitation_error(ADDRESS_NOT_ON_USER));
    }
    let on_premises_upn = user
        .props
        .get("onPremisesUserPrincipalName")
        .is_some_and(|v| !v.is_null());
    if user.is_synced() && on_premises_upn {
        return Err(invitation_error(
            "Unable to convert this user to B2B collaboration: internal-to-external conversion is blocked for users whose onPremisesUserPrincipalName is set (Microsoft Entra Connect's default sync rule writes it, and it can prevent the user from signing in with external credentials).",
        ));
    }
    Ok(())
}

/// The user is (again) an external user waiting to redeem; recorded as a change like any
/// directory write (delta, change notifications, replication lag).
fn mark_pending_acceptance(w: &mut World, uid: &str, now: DateTime<Utc>, tenant_id: &str) {
    let user = w.users.get_mut(uid).expect("caller found the user");
    user.props
        .insert("externalUserState".into(), json!("PendingAcceptance"));
    user.props.insert(
        "externalUserStateChangeDateTime".into(),
        json!(graph_time(now)),
    );
    w.record_change(
        uid,
        ChangeKind::Upsert(vec![
            "externalUserState".into(),
            "externalUserStateChangeDateTime".into(),
        ]),
        now,
        tenant_id,
    );
}

/// The 201 body: Graph's invitation entity, echoing what the request set.
fn invitation_body(sim: &Sim, req: &InvitationRequest, user_id: &str) -> Value {
    json!({
        "@odata.context": context(sim, "invitations/$entity"),
        "id": Uuid::new_v4().to_string(),
        "inviteRedeemUrl": format!(
            "https://login.microsoftonline.com/redeem?rd=https%3a%2f%2finvitations.microsoft.com%2fredeem%2f%3ftenant%3d{}%26user%3d{}",
            sim.config.tenant_id, user_id
        ),
        "invitedUserDisplayName": req.display_name,
        "invitedUserType": req.user_type,
        "invitedUserEmailAddress": req.email,
        "sendInvitationMessage": req.send_message,
        "resetRedemption": req.reset_redemption,
        "inviteRedirectUrl": req.redirect,
        "status": "PendingAcceptance",
        "invitedUserMessageInfo": req.message_info,
        "invitedUser": { "id": user_id },
    })
}
