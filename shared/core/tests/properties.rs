//! Property tests of the pure core: names are always valid for Windows AD, DNs round-trip, and a
//! plan, once applied, leaves nothing to do.

use proptest::prelude::*;
use shadowsync_core::account::uac;
use shadowsync_core::names::{is_valid_common_name, is_valid_sam_account_name};
use shadowsync_core::{
    apply, desired_state, dn, plan, ActualAccount, GraphUser, Location, ManagedAttributes,
    ObjectId, Observation, Operation, Policy, ShadowAccount, UserLookup,
};

/// Any text, biased towards what breaks naive code: LDAP and DN specials, control characters
/// (NUL included), spaces at the edges, emoji, right-to-left text, and lengths up to 500.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ ,+\"\\\\<>;#=*()/\\[\\]:|?@.\\x00\\n\\t\u{202E}\u{05D0}-\u{05EA}😀é a-zA-Z0-9]{0,40}",
        "[a-z😀 ,]{400,500}",
        Just(String::new()),
    ]
}

fn maybe(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::of(s)
}

prop_compose! {
    fn graph_user()(
        id in "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        upn in maybe(nasty()),
        display_name in maybe(nasty()),
        given_name in maybe(nasty()),
        surname in maybe(nasty()),
        mail in maybe(nasty()),
        other_mails in prop::collection::vec(nasty(), 0..3),
        guest in any::<bool>(),
        accepted in any::<bool>(),
        enabled in prop::option::of(any::<bool>()),
    ) -> GraphUser {
        GraphUser {
            id: ObjectId::parse(&id).unwrap(),
            user_principal_name: upn,
            display_name,
            given_name,
            surname,
            mail,
            other_mails,
            user_type: Some(if guest { "Guest" } else { "Member" }.into()),
            external_user_state: Some(if accepted { "Accepted" } else { "PendingAcceptance" }.into()),
            account_enabled: enabled,
            ..Default::default()
        }
    }
}

fn policy() -> Policy {
    Policy::new(
        "OU=Guests,DC=corp,DC=example,DC=test",
        "OU=Disabled Guests,DC=corp,DC=example,DC=test",
    )
}

/// An account as AD might hold it now: derived from some (possibly other) user, then drifted.
fn actual_account() -> impl Strategy<Value = Option<ActualAccount>> {
    prop::option::of(
        (
            graph_user(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            maybe(nasty()),
            any::<u32>(),
        )
            .prop_map(
                |(user, disabled_ou, enabled, flags_drift, stray_mail, junk)| {
                    let p = policy();
                    let shadow = ShadowAccount::for_user(&user, &p);
                    let ou = if disabled_ou {
                        p.disabled_ou.clone()
                    } else {
                        p.guests_ou.clone()
                    };
                    let location = Location {
                        cn: shadow.location.cn.clone(),
                        ou,
                    };
                    let base = if enabled { uac::ENABLED } else { uac::DISABLED };
                    ActualAccount {
                        dn: location.dn(),
                        object_guid: None,
                        anchor: Some(shadow.anchor.clone()),
                        sam_account_name: shadow.sam_account_name.clone(),
                        location,
                        attributes: ManagedAttributes {
                            mail: stray_mail,
                            ..shadow.attributes
                        },
                        user_account_control: if flags_drift {
                            base | (junk & !uac::ACCOUNTDISABLE)
                        } else {
                            base
                        },
                    }
                },
            ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_are_always_valid_for_windows_ad(
        user in graph_user(),
        // The name rules take any text as an id, not only the GUIDs an ObjectId holds.
        raw_id in prop_oneof![nasty(), "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"],
    ) {
        let account = ShadowAccount::for_user(&user, &policy());
        for id in [user.id.as_str(), raw_id.as_str()] {
            let candidates = shadowsync_core::names::sam_account_name_candidates(
                id, user.user_principal_name.as_deref());
            prop_assert!(!candidates.is_empty());
            for sam in &candidates {
                prop_assert!(is_valid_sam_account_name(sam), "invalid sAMAccountName {sam:?}");
            }
            let cn = shadowsync_core::names::common_name(id, user.display_name.as_deref(), None, None);
            prop_assert!(is_valid_common_name(&cn), "invalid cn {cn:?}");
        }
        prop_assert!(is_valid_common_name(&account.location.cn), "invalid cn {:?}", account.location.cn);
        for (name, value) in account.attributes.fields() {
            if let Some(v) = value {
                prop_assert!(!v.is_empty() && !v.chars().any(char::is_control), "{name} = {v:?}");
            }
        }
    }

    #[test]
    fn names_are_deterministic(user in graph_user()) {
        prop_assert_eq!(ShadowAccount::for_user(&user, &policy()), ShadowAccount::for_user(&user, &policy()));
    }

    #[test]
    fn a_dn_parses_back_to_the_same_rdn_value(value in nasty()) {
        let built = dn::child("CN", &value, "OU=Guests,DC=corp,DC=example,DC=test");
        let rdns = dn::parse(&built).unwrap();
        prop_assert_eq!(rdns.len(), 5);
        prop_assert_eq!(&rdns[0][0].value, &value);
        prop_assert!(dn::is_within(&built, "OU=Guests,DC=corp,DC=example,DC=test"));
        prop_assert_eq!(dn::parent(&built).unwrap(), "OU=Guests,DC=corp,DC=example,DC=test");
    }

    #[test]
    fn a_cn_survives_the_round_trip(user in graph_user()) {
        let account = ShadowAccount::for_user(&user, &policy());
        prop_assert_eq!(dn::first_value(&account.location.dn()).unwrap(), account.location.cn);
    }

    #[test]
    fn applying_a_plan_then_planning_again_yields_nothing(
        user in graph_user(),
        lookup_kind in 0..3u8,
        member in any::<bool>(),
        actual in actual_account(),
        days_disabled in prop::option::of(0i64..60),
        deletion_confirmed in any::<bool>(),
    ) {
        let p = Policy {
            scope_group_id: Some(ObjectId::parse("0a0b0c0d-0000-4000-8000-000000000001").unwrap()),
            ..policy()
        };
        let now = chrono::Utc::now();
        let lookup = match lookup_kind {
            0 => UserLookup::Active(user),
            1 => UserLookup::SoftDeleted(user),
            _ => UserLookup::Gone,
        };
        let since = days_disabled.map(|d| now - chrono::Duration::days(d));
        let desired = desired_state(&lookup, member, deletion_confirmed, &p, since, now);
        let first = plan(&desired, &Observation::of(actual.clone()), &p);
        prop_assume!(!first.iter().any(|op| matches!(op, Operation::Conflict { .. })));
        let after = apply(actual, &first);
        let second = plan(&desired, &Observation::of(after), &p);
        prop_assert!(second.is_empty(), "first {first:?} then {second:?}");
    }
}
