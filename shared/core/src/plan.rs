//! `plan(desired, observed)`: the ordered operations that make AD agree with the desired state.
//! `apply` is their pure effect, so that "apply, then plan again" can be checked to yield nothing.

use crate::account::{attr, uac, ActualAccount, DesiredState, Location, ManagedAttributes};
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the directory holds that matters for one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Every object in the domain carrying this guest's anchor (normally none or one).
    pub accounts: Vec<ActualAccount>,
    /// DN of an object that is not this guest's account but holds the UPN the account should have.
    pub foreign_upn_holder: Option<String>,
}

impl Observation {
    pub fn of(account: Option<ActualAccount>) -> Self {
        Self {
            accounts: account.into_iter().collect(),
            foreign_upn_holder: None,
        }
    }
}

/// Set an attribute to a value, or remove it (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeChange {
    pub attribute: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Create the account, enabled, in the guests OU.
    Create {
        account: Box<crate::account::ShadowAccount>,
    },
    Update {
        changes: Vec<AttributeChange>,
    },
    /// Set the disabled `userAccountControl`, then move (and rename) if `move_to` is set.
    Disable {
        move_to: Option<Location>,
    },
    /// Set the enabled `userAccountControl`, then move (and rename) if `move_to` is set.
    Enable {
        move_to: Option<Location>,
    },
    /// Rename or move without changing whether the account is enabled.
    Move {
        to: Location,
    },
    Delete {
        reason: String,
    },
    /// Nothing can be done safely; a human has to look.
    Conflict {
        reason: String,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moved = |m: &Option<Location>| match m {
            Some(to) => format!(" and move to {}", to.dn()),
            None => String::new(),
        };
        match self {
            Self::Create { account } => write!(
                f,
                "create {} (sAMAccountName {})",
                account.location.dn(),
                account.sam_account_name
            ),
            Self::Update { changes } => {
                let names: Vec<_> = changes.iter().map(|c| c.attribute.as_str()).collect();
                write!(f, "update {}", names.join(", "))
            }
            Self::Disable { move_to } => write!(f, "disable{}", moved(move_to)),
            Self::Enable { move_to } => write!(f, "enable{}", moved(move_to)),
            Self::Move { to } => write!(f, "move to {}", to.dn()),
            Self::Delete { reason } => write!(f, "delete ({reason})"),
            Self::Conflict { reason } => write!(f, "conflict: {reason}"),
        }
    }
}

/// Ordered operations; empty means AD already agrees.
pub type Plan = Vec<Operation>;

/// The operations that take the observed directory to the desired state.
///
/// Order matters and is chosen for safety: a disabled account is locked out before anything else
/// happens to it, and an account being re-enabled gets its attributes before it is enabled.
/// `sAMAccountName` is chosen at creation and never changed afterwards (apps and Kerberos
/// principals depend on it).
pub fn plan(desired: &DesiredState, observed: &Observation, policy: &Policy) -> Plan {
    if observed.accounts.len() > 1 {
        let dns: Vec<_> = observed.accounts.iter().map(|a| a.dn.as_str()).collect();
        return conflict(format!(
            "{} objects carry this guest's anchor: {}",
            dns.len(),
            dns.join("; ")
        ));
    }
    let actual = observed.accounts.first();
    if let Some(a) = actual.filter(|a| !policy.manages(&a.dn)) {
        return conflict(format!(
            "the object carrying this guest's anchor, {}, is outside the managed OUs",
            a.dn
        ));
    }
    match (desired, actual) {
        (DesiredState::Disabled(_) | DesiredState::Deleted(_), None) => vec![],
        (DesiredState::Deleted(reason), Some(_)) => vec![Operation::Delete {
            reason: reason.to_string(),
        }],
        (DesiredState::Enabled(account), None) => match &observed.foreign_upn_holder {
            Some(holder) => conflict(upn_conflict(holder)),
            None => vec![Operation::Create {
                account: account.clone(),
            }],
        },
        (DesiredState::Enabled(account), Some(a)) => {
            let mut changes = attribute_changes(&account.attributes, &a.attributes);
            if let Some(holder) = &observed.foreign_upn_holder {
                if changes
                    .iter()
                    .any(|c| c.attribute == attr::USER_PRINCIPAL_NAME)
                {
                    return conflict(upn_conflict(holder));
                }
            }
            let move_to =
                (!a.location.same_as(&account.location)).then(|| account.location.clone());
            let mut ops = Vec::new();
            if a.is_enabled() {
                if a.user_account_control != uac::ENABLED {
                    changes.push(account_control(uac::ENABLED));
                }
                push_update(&mut ops, changes);
                ops.extend(move_to.map(|to| Operation::Move { to }));
            } else {
                push_update(&mut ops, changes);
                ops.push(Operation::Enable { move_to });
            }
            ops
        }
        (DesiredState::Disabled(_), Some(a)) => {
            let target = Location {
                cn: a.location.cn.clone(),
                ou: policy.disabled_ou.clone(),
            };
            let move_to = (!a.location.same_as(&target)).then_some(target);
            if a.is_enabled() {
                return vec![Operation::Disable { move_to }];
            }
            let mut ops = Vec::new();
            if a.user_account_control != uac::DISABLED {
                push_update(&mut ops, vec![account_control(uac::DISABLED)]);
            }
            ops.extend(move_to.map(|to| Operation::Move { to }));
            ops
        }
    }
}

fn conflict(reason: String) -> Plan {
    vec![Operation::Conflict { reason }]
}

fn upn_conflict(holder: &str) -> String {
    format!("userPrincipalName already used by {holder}, which shadowsync does not own")
}

fn account_control(value: u32) -> AttributeChange {
    AttributeChange {
        attribute: attr::USER_ACCOUNT_CONTROL.to_string(),
        value: Some(value.to_string()),
    }
}

fn push_update(ops: &mut Plan, changes: Vec<AttributeChange>) {
    if !changes.is_empty() {
        ops.push(Operation::Update { changes });
    }
}

fn attribute_changes(
    desired: &ManagedAttributes,
    actual: &ManagedAttributes,
) -> Vec<AttributeChange> {
    desired
        .fields()
        .into_iter()
        .zip(actual.fields())
        .filter(|((_, want), (_, have))| want != have)
        .map(|((attribute, want), _)| AttributeChange {
            attribute: attribute.to_string(),
            value: want.map(str::to_string),
        })
        .collect()
}

/// The effect of a plan on the account, as the directory would apply it.
pub fn apply(account: Option<ActualAccount>, plan: &[Operation]) -> Option<ActualAccount> {
    let mut account = account;
    for op in plan {
        account = match (op, account) {
            (Operation::Create { account: new }, _) => Some(ActualAccount {
                dn: new.location.dn(),
                object_guid: None,
                anchor: Some(new.anchor.clone()),
                sam_account_name: new.sam_account_name.clone(),
                location: new.location.clone(),
                attributes: new.attributes.clone(),
                user_account_control: uac::ENABLED,
            }),
            (Operation::Delete { .. }, _) => None,
            (Operation::Conflict { .. }, a) => a,
            (_, None) => None,
            (Operation::Update { changes }, Some(mut a)) => {
                for c in changes {
                    if c.attribute == attr::USER_ACCOUNT_CONTROL {
                        a.user_account_control =
                            c.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                    } else {
                        a.attributes.set(&c.attribute, c.value.clone());
                    }
                }
                Some(a)
            }
            (Operation::Disable { move_to }, Some(a)) => Some(relocate(a, uac::DISABLED, move_to)),
            (Operation::Enable { move_to }, Some(a)) => Some(relocate(a, uac::ENABLED, move_to)),
            (Operation::Move { to }, Some(a)) => {
                let control = a.user_account_control;
                Some(relocate(a, control, &Some(to.clone())))
            }
        };
    }
    account
}

fn relocate(mut a: ActualAccount, control: u32, to: &Option<Location>) -> ActualAccount {
    a.user_account_control = control;
    if let Some(to) = to {
        a.location = to.clone();
        a.dn = to.dn();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{DeleteReason, DisableReason, ShadowAccount};
    use crate::user::GraphUser;

    fn policy() -> Policy {
        Policy::new("OU=Guests,DC=corp", "OU=Disabled Guests,DC=corp")
    }

    fn account() -> ShadowAccount {
        let user = GraphUser {
            id: crate::ObjectId::parse("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b").unwrap(),
            user_principal_name: Some("al_x.com#EXT#@t.onmicrosoft.com".into()),
            display_name: Some("Al".into()),
            user_type: Some("Guest".into()),
            ..Default::default()
        };
        ShadowAccount::for_user(&user, &policy())
    }

    fn created() -> ActualAccount {
        apply(
            None,
            &[Operation::Create {
                account: Box::new(account()),
            }],
        )
        .unwrap()
    }

    #[test]
    fn creates_then_nothing() {
        let desired = DesiredState::Enabled(Box::new(account()));
        let p = plan(&desired, &Observation::default(), &policy());
        assert!(matches!(p.as_slice(), [Operation::Create { .. }]));
        assert!(plan(&desired, &Observation::of(Some(created())), &policy()).is_empty());
    }

    #[test]
    fn display_name_change_updates_and_renames() {
        let mut acc = account();
        acc.attributes.display_name = Some("Al B".into());
        acc.location.cn = "Al B_x".into();
        let p = plan(
            &DesiredState::Enabled(Box::new(acc)),
            &Observation::of(Some(created())),
            &policy(),
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].to_string(), "update displayName");
        assert!(matches!(&p[1], Operation::Move { to } if to.cn == "Al B_x"));
    }

    #[test]
    fn disable_moves_and_restore_moves_back() {
        let p = plan(
            &DesiredState::Disabled(DisableReason::SoftDeleted),
            &Observation::of(Some(created())),
            &policy(),
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].to_string().starts_with("disable and move to CN=Al_"));
        let disabled = apply(Some(created()), &p).unwrap();
        assert!(!disabled.is_enabled());
        assert_eq!(disabled.location.ou, "OU=Disabled Guests,DC=corp");
        let p = plan(
            &DesiredState::Enabled(Box::new(account())),
            &Observation::of(Some(disabled)),
            &policy(),
        );
        assert!(
            matches!(p.as_slice(), [Operation::Enable { move_to: Some(l) }] if l.ou == "OU=Guests,DC=corp")
        );
    }

    #[test]
    fn nothing_is_created_for_a_guest_out_of_scope() {
        for d in [
            DesiredState::Disabled(DisableReason::NotGuest),
            DesiredState::Deleted(DeleteReason::PermanentlyDeleted),
        ] {
            assert!(plan(&d, &Observation::default(), &policy()).is_empty());
        }
    }

    #[test]
    fn conflicts() {
        let desired = DesiredState::Enabled(Box::new(account()));
        let taken = Observation {
            accounts: vec![],
            foreign_upn_holder: Some("CN=Employee,OU=Staff,DC=corp".into()),
        };
        assert!(
            matches!(plan(&desired, &taken, &policy()).as_slice(), [Operation::Conflict { reason }] if reason.contains("CN=Employee"))
        );

        let mut outside = created();
        outside.dn = "CN=Al,OU=Staff,DC=corp".into();
        let p = plan(&desired, &Observation::of(Some(outside)), &policy());
        assert!(
            matches!(p.as_slice(), [Operation::Conflict { reason }] if reason.contains("outside the managed OUs"))
        );

        let two = Observation {
            accounts: vec![created(), created()],
            foreign_upn_holder: None,
        };
        assert!(matches!(
            plan(&desired, &two, &policy()).as_slice(),
            [Operation::Conflict { .. }]
        ));
    }

    #[test]
    fn flag_drift_is_repaired() {
        let mut a = created();
        a.user_account_control |= uac::NOT_DELEGATED;
        let p = plan(
            &DesiredState::Enabled(Box::new(account())),
            &Observation::of(Some(a)),
            &policy(),
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].to_string(), "update userAccountControl");
    }

    #[test]
    fn operations_serialise_for_machines() {
        let json = serde_json::to_value(Operation::Disable { move_to: None }).unwrap();
        assert_eq!(json, serde_json::json!({"op": "disable", "move_to": null}));
    }
}
