//! Identifiers of Entra ID objects.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// An Entra ID object id (a user's or a group's): a GUID, kept in its canonical lower-case,
/// hyphenated form. Graph's `/users/{id}` also accepts a userPrincipalName, so nothing but a
/// GUID may ever be put there: making the id a type that only a GUID can become closes that
/// door on every path (notifications, delta items, anchors read from AD, admin input).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectId(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not an Entra object id (a GUID like 4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b)")]
pub struct InvalidObjectId(pub String);

impl ObjectId {
    /// Parses a hyphenated GUID, in either case. Braced, URN and un-hyphenated forms are refused:
    /// Graph never writes them, so they can only come from somewhere else.
    pub fn parse(s: &str) -> Result<Self, InvalidObjectId> {
        let hyphenated = s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if hyphenated {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(InvalidObjectId(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A GUID derived from `label` (the first 16 bytes of its SHA-256), for tests and
    /// simulations that name users by short labels ("alice", "u3") and need the same id for the
    /// same label every time.
    pub fn from_label(label: &str) -> Self {
        use sha2::{Digest, Sha256};
        let hex: String = Sha256::digest(label.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self(format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ))
    }

    /// The all-zero GUID, which no Entra object has; a placeholder for defaults in tests.
    pub fn nil() -> Self {
        Self("00000000-0000-0000-0000-000000000000".into())
    }
}

impl Default for ObjectId {
    fn default() -> Self {
        Self::nil()
    }
}

impl FromStr for ObjectId {
    type Err = InvalidObjectId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ObjectId {
    type Error = InvalidObjectId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ObjectId> for String {
    fn from(id: ObjectId) -> Self {
        id.0
    }
}

/// Read as text wherever text is expected (a URL segment, an anchor, a log field).
impl std::ops::Deref for ObjectId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ObjectId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ObjectId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for ObjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyphenated_guids_are_object_ids() {
        let id = ObjectId::parse("4F8A2C1E-9B3D-4E5F-8A7B-6C5D4E3F2A1B").unwrap();
        assert_eq!(id.as_str(), "4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b");
        assert!(ObjectId::parse("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b").is_ok());
        for bad in [
            "4f8a2c1e9b3d4e5f8a7b6c5d4e3f2a1b",
            "{4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b}",
            "alice@contoso.com",
            "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com",
            "4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1g",
            "../users",
            "",
        ] {
            assert!(ObjectId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_give_stable_distinct_ids() {
        let a = ObjectId::from_label("alice");
        assert_eq!(a, ObjectId::from_label("alice"));
        assert_ne!(a, ObjectId::from_label("bob"));
        assert_eq!(ObjectId::parse(&a).unwrap(), a);
    }

    #[test]
    fn serde_checks_too() {
        let id: ObjectId =
            serde_json::from_str("\"4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b\""
        );
        assert!(serde_json::from_str::<ObjectId>("\"alice@contoso.com\"").is_err());
    }
}
