//! `[partners]`: the other direction. Which AD accounts are partners, and how each becomes a B2B
//! guest in Entra ID: invited (organisations that do not sync AD to Entra) or converted in place
//! (organisations whose Entra Connect already syncs the partner accounts).

use crate::values::{self, error};
use crate::ConfigError;
use serde::Deserialize;
pub use shadowsync_core::partner::PartnerAttribute;
use std::time::Duration;
use toml::Value;
use url::Url;

const DAY: u64 = 24 * 3600;
/// Entra keeps a deleted user restorable for 30 days; a guest is deleted after as long.
pub const DEFAULT_GUEST_RETENTION: Duration = Duration::from_secs(30 * DAY);
/// Where a partner lands after redeeming an invitation: Microsoft's My Apps portal, which lists
/// what the partner was given.
pub const DEFAULT_REDIRECT_URL: &str = "https://myapplications.microsoft.com";
/// The guest property that carries the link to the AD account (`Partner_<objectGUID>`) on an
/// invited guest: one of the fifteen `onPremisesExtensionAttributes`, writable on cloud-only
/// users and filterable, so the link survives the loss of the state store.
pub const DEFAULT_LINK_ATTRIBUTE: &str = "extensionAttribute15";

/// How a partner account becomes a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerMode {
    /// `POST /invitations` with the partner's own address; the partner signs in with their own
    /// organisation's identity. A guest already invited for that address is adopted.
    Invite,
    /// The user Entra Connect syncs from the account (matched by `onPremisesImmutableId`, never
    /// by name) is converted to B2B collaboration in place and made `userType = Guest`.
    Convert,
}

/// The validated `[partners]` section; absent, the direction is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnersSection {
    /// `mode`, required: `"invite"` or `"convert"`.
    pub mode: PartnerMode,
    /// `ous`: DNs of OUs whose user accounts (one level) are partners.
    pub ous: Vec<String>,
    /// `filter`: an LDAP filter partner accounts match (`(extensionAttribute1=Partner)`);
    /// with `ous`, both must hold.
    pub filter: Option<String>,
    /// `upn_suffixes`: `@partners.contoso.com`…: accounts whose UPN ends with one are partners
    /// (with `ous` or `filter`, all that are given must hold). Lower-cased, with the `@`.
    pub upn_suffixes: Vec<String>,
    /// `link_attribute`, default `extensionAttribute15`: which of the guest's
    /// `onPremisesExtensionAttributes` carries `Partner_<objectGUID>` (invite mode).
    pub link_attribute: String,
    /// `attributes`, default all six: the guest properties that follow the AD account
    /// (`displayName`, `givenName`, `surname`, `companyName`, `jobTitle`, `department`).
    pub attributes: Vec<PartnerAttribute>,
    /// `redirect_url`, default My Apps: where an invited partner lands after redeeming.
    pub redirect_url: Url,
    /// `send_invitation_message`, default false: Entra mails the invitation (else the partner
    /// is told by the organisation, and redeems on first sign-in to an app).
    pub send_invitation_message: bool,
    /// `message_language`, optional (`"de-DE"`): the invitation mail's language.
    pub message_language: Option<String>,
    /// `retention`, default 30 days: how long a guest whose account left scope or was deleted
    /// stays blocked before it is deleted (`"never"` keeps it).
    pub retention: Option<Duration>,
    /// `poll_interval`, default 5 s: between two rounds of the AD watcher in `serve` and the
    /// connector (one indexed `uSNChanged` search each).
    pub poll_interval: Duration,
}

/// The AD watcher's default pause: a change reaches the guest within seconds, for one indexed
/// search of a few entries.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    mode: Option<String>,
    ous: Option<Value>,
    filter: Option<String>,
    upn_suffixes: Option<Value>,
    link_attribute: Option<String>,
    attributes: Option<Value>,
    redirect_url: Option<String>,
    send_invitation_message: Option<Value>,
    message_language: Option<String>,
    retention: Option<Value>,
    poll_interval: Option<Value>,
}

impl PartnersSection {
    /// The extension attribute that marks a partner's guest, in invite mode (a converted
    /// partner is a synced user, which the guest direction already leaves alone).
    pub fn link_attribute_in_use(&self) -> Option<String> {
        (self.mode == PartnerMode::Invite).then(|| self.link_attribute.clone())
    }

    /// The one conversion, for the file and the environment alike. Lists may be TOML arrays
    /// or, from the environment, one string with `;` between items (DNs contain commas).
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("partners", table)?;
        let mode = match values::required("partners.mode", raw.mode)?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "invite" => PartnerMode::Invite,
            "convert" => PartnerMode::Convert,
            other => {
                return Err(error(
                    "partners.mode",
                    format!("{other:?} is neither \"invite\" nor \"convert\""),
                ))
            }
        };
        let ous = list("partners.ous", raw.ous)?
            .into_iter()
            .map(|ou| values::dn("partners.ous", ou))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = raw
            .filter
            .map(|f| ldap_filter("partners.filter", f))
            .transpose()?;
        let upn_suffixes = list("partners.upn_suffixes", raw.upn_suffixes)?
            .into_iter()
            .map(|s| upn_suffix("partners.upn_suffixes", &s))
            .collect::<Result<Vec<_>, _>>()?;
        if ous.is_empty() && filter.is_none() && upn_suffixes.is_empty() {
            return Err(error(
                "partners",
                "name the partner accounts: ous, filter or upn_suffixes (one at least)",
            ));
        }
        let link_attribute = match raw.link_attribute {
            None => DEFAULT_LINK_ATTRIBUTE.to_string(),
            Some(name) => extension_attribute("partners.link_attribute", &name)?,
        };
        let attributes = match raw.attributes {
            None => PartnerAttribute::ALL.to_vec(),
            Some(value) => {
                let mut attributes = Vec::new();
                for name in list("partners.attributes", Some(value))? {
                    let attribute = PartnerAttribute::parse(&name).ok_or_else(|| {
                        error(
                            "partners.attributes",
                            format!(
                                "{name:?} is not one of {}",
                                PartnerAttribute::ALL
                                    .map(PartnerAttribute::graph_name)
                                    .join(", ")
                            ),
                        )
                    })?;
                    if !attributes.contains(&attribute) {
                        attributes.push(attribute);
                    }
                }
                attributes
            }
        };
        let redirect_url = values::http_url(
            "partners.redirect_url",
            raw.redirect_url.as_deref().unwrap_or(DEFAULT_REDIRECT_URL),
        )?;
        if redirect_url.scheme() != "https" {
            return Err(error("partners.redirect_url", "must be an https URL"));
        }
        let send_invitation_message = raw
            .send_invitation_message
            .map(|v| values::boolean("partners.send_invitation_message", &v))
            .transpose()?
            .unwrap_or(false);
        let message_language = raw
            .message_language
            .map(|l| language("partners.message_language", &l))
            .transpose()?;
        let retention = match raw.retention {
            None => Some(DEFAULT_GUEST_RETENTION),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("never") => None,
            Some(value) => {
                Some(values::duration("partners.retention", &value)?).filter(|d| !d.is_zero())
            }
        };
        let poll_interval = match raw.poll_interval {
            None => DEFAULT_POLL_INTERVAL,
            Some(value) => values::duration("partners.poll_interval", &value)?,
        };
        if poll_interval < Duration::from_secs(1) {
            return Err(error(
                "partners.poll_interval",
                "must be 1s or more (each round is a search of the domain controller)",
            ));
        }
        Ok(Self {
            poll_interval,
            mode,
            ous,
            filter,
            upn_suffixes,
            link_attribute,
            attributes,
            redirect_url,
            send_invitation_message,
            message_language,
            retention,
        })
    }
}

/// A TOML array of strings, or one string with `;` between items; blanks dropped.
fn list(key: &str, value: Option<Value>) -> Result<Vec<String>, ConfigError> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => s.split(';').map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(error(
                    key,
                    format!("{} is not a string", values::shown(&other)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(error(
                key,
                format!("{} is not a list of strings", values::shown(&other)),
            ))
        }
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// An LDAP filter in parentheses, balanced (RFC 4515's outer shape; the DC judges the rest).
fn ldap_filter(key: &str, value: String) -> Result<String, ConfigError> {
    let value = value.trim().to_string();
    let mut depth = 0i32;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            // RFC 4515 escapes are `\XX`; a backslash never escapes a parenthesis, but a
            // filter with one inside a value would be unbalanced anyway.
            '\\' => escaped = true,
            '(' if !escaped => depth += 1,
            ')' if !escaped => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            _ => escaped = false,
        }
    }
    if !value.starts_with('(') || !value.ends_with(')') || depth != 0 {
        return Err(error(
            key,
            format!("{value:?} is not an LDAP filter in balanced parentheses, such as (extensionAttribute1=Partner)"),
        ));
    }
    Ok(value)
}

/// `@partners.contoso.com` (the `@` added when missing), lower-cased.
fn upn_suffix(key: &str, value: &str) -> Result<String, ConfigError> {
    let domain = value.trim().trim_start_matches('@').to_ascii_lowercase();
    if !shadowsync_core::partner::is_domain_name(&domain) {
        return Err(error(
            key,
            format!("{value:?} is not a UPN suffix such as @partners.contoso.com"),
        ));
    }
    Ok(format!("@{domain}"))
}

/// `extensionAttribute1` … `extensionAttribute15`, in Graph's spelling.
fn extension_attribute(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let n = value
        .get(..18)
        .filter(|p| p.eq_ignore_ascii_case("extensionAttribute"))
        .and_then(|_| value[18..].parse::<u8>().ok())
        .filter(|n| (1..=15).contains(n));
    match n {
        Some(n) => Ok(format!("extensionAttribute{n}")),
        None => Err(error(
            key,
            format!("{value:?} is not one of extensionAttribute1 … extensionAttribute15"),
        )),
    }
}

/// A language tag such as `en-US` (letters, digits and hyphens; Graph checks the rest).
fn language(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let valid = !value.is_empty()
        && value.len() <= 35
        && value
            .split('-')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()));
    if !valid {
        return Err(error(
            key,
            format!("{value:?} is not a language tag such as en-US"),
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PartnersSection, ConfigError> {
        PartnersSection::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn a_minimal_section_takes_the_defaults() {
        let p =
            parse("mode = \"invite\"\nous = [\"OU=Partners,DC=corp,DC=example,DC=test\"]").unwrap();
        assert_eq!(p.mode, PartnerMode::Invite);
        assert_eq!(p.ous, ["OU=Partners,DC=corp,DC=example,DC=test"]);
        assert_eq!(p.link_attribute, "extensionAttribute15");
        assert_eq!(p.attributes, PartnerAttribute::ALL);
        assert_eq!(
            p.redirect_url.as_str(),
            "https://myapplications.microsoft.com/"
        );
        assert!(!p.send_invitation_message);
        assert_eq!(p.retention, Some(DEFAULT_GUEST_RETENTION));
        assert_eq!(p.poll_interval, DEFAULT_POLL_INTERVAL);
    }

    #[test]
    fn every_key_and_the_environment_s_lists() {
        let p = parse(
            r#"
mode = "Convert"
ous = "OU=A,DC=corp;  OU=B\\, Ltd,DC=corp ;"
filter = "(&(objectClass=user)(extensionAttribute1=Partner))"
upn_suffixes = ["partners.contoso.com", "@Extern.Contoso.com"]
link_attribute = "EXTENSIONATTRIBUTE3"
attributes = ["displayName", "jobTitle", "displayname"]
redirect_url = "https://apps.contoso.com/welcome"
send_invitation_message = "true"
message_language = "de-DE"
retention = "never"
poll_interval = "30s"
"#,
        )
        .unwrap();
        assert_eq!(p.mode, PartnerMode::Convert);
        assert_eq!(p.ous, ["OU=A,DC=corp", "OU=B\\, Ltd,DC=corp"]);
        assert_eq!(
            p.upn_suffixes,
            ["@partners.contoso.com", "@extern.contoso.com"]
        );
        assert_eq!(p.link_attribute, "extensionAttribute3");
        assert_eq!(
            p.attributes,
            [PartnerAttribute::DisplayName, PartnerAttribute::JobTitle]
        );
        assert!(p.send_invitation_message);
        assert_eq!(p.message_language.as_deref(), Some("de-DE"));
        assert_eq!(p.retention, None);
        assert_eq!(p.poll_interval, Duration::from_secs(30));
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("ous = [\"OU=P,DC=x\"]", "partners.mode"),
            ("mode = \"sync\"\nous = [\"OU=P,DC=x\"]", "partners.mode"),
            ("mode = \"invite\"", "partners"),
            (
                "mode = \"invite\"\nous = \"OU=P,DC=x\"\npoll_interval = \"100ms\"",
                "partners.poll_interval",
            ),
            ("mode = \"invite\"\nous = [\"not a dn\"]", "partners.ous"),
            ("mode = \"invite\"\nous = [3]", "partners.ous"),
            ("mode = \"invite\"\nfilter = \"extensionAttribute1=Partner\"", "partners.filter"),
            ("mode = \"invite\"\nfilter = \"(a=b))(\"", "partners.filter"),
            ("mode = \"invite\"\nupn_suffixes = [\"contoso\"]", "partners.upn_suffixes"),
            ("mode = \"invite\"\nupn_suffixes = [\"@bad_domain.com\"]", "partners.upn_suffixes"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nlink_attribute = \"extensionAttribute16\"", "partners.link_attribute"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nlink_attribute = \"employeeId\"", "partners.link_attribute"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nattributes = [\"mail\"]", "partners.attributes"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nredirect_url = \"http://apps.contoso.com\"", "partners.redirect_url"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nmessage_language = \"en US\"", "partners.message_language"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nretention = \"soon\"", "partners.retention"),
            ("mode = \"invite\"\nous = \"OU=P,DC=x\"\nscope = 1", "partners"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
