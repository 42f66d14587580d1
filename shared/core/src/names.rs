//! Names Active Directory will accept, derived deterministically from the guest.
//!
//! Lengths are counted in UTF-16 code units, the unit AD's `rangeUpper` limits apply to, which is
//! never more lenient than counting characters.

use sha2::{Digest, Sha256};

/// AD's limit for `sAMAccountName` (Windows refuses longer; Samba does not, so we enforce it).
pub const SAM_MAX: usize = 20;
/// AD's limit for `cn` (Windows refuses longer; Samba does not).
pub const CN_MAX: usize = 64;
/// Characters of the readable part of a `cn`; the rest is `_` and the objectId tail.
pub const CN_NAME_MAX: usize = CN_MAX - 1 - ID_TAIL_LEN;
const ID_TAIL_LEN: usize = 12;

/// Characters Windows forbids in a `sAMAccountName`.
pub const SAM_FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>@";

/// Fallback for a name that sanitises to nothing.
const FALLBACK: &str = "guest";

/// Length in UTF-16 code units.
pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Longest prefix of `s` that fits in `max` UTF-16 code units, never splitting a character.
pub fn truncate_utf16(s: &str, max: usize) -> &str {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return &s[..i];
        }
    }
    s
}

/// Removes control characters (NUL, line breaks, ...) and trims surrounding white space.
pub fn clean_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// Cleans a value and cuts it to an attribute's `rangeUpper`; `None` when nothing is left.
pub fn attribute_value(s: Option<&str>, max: usize) -> Option<String> {
    let cleaned = clean_text(s?);
    let cut = truncate_utf16(&cleaned, max).trim_end();
    (!cut.is_empty()).then(|| cut.to_string())
}

/// A stable run of lowercase hex derived from the objectId: its own hex digits for a GUID (so an
/// administrator can recognise it), a SHA-256 of it for anything else.
fn id_hex(object_id: &str) -> String {
    let hex: String = object_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() >= 32 {
        hex
    } else {
        Sha256::digest(object_id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The last `n` characters of the objectId's hex.
pub fn id_tail(object_id: &str, n: usize) -> String {
    let hex = id_hex(object_id);
    hex[hex.len() - n..].to_string()
}

/// The part of a UPN a `sAMAccountName` is derived from: before `#EXT#` for a guest
/// (`alice_fabrikam.com`), else before `@`.
fn upn_local_part(upn: &str) -> &str {
    let upper = upn.to_ascii_uppercase();
    if let Some(i) = upper.find("#EXT#") {
        return &upn[..i];
    }
    upn.split('@').next().unwrap_or(upn)
}

/// Reduces any text to what is safe in a `sAMAccountName`: ASCII (transliterated), lowercase,
/// letters, digits, `.`, `-`, `_`; no leading or trailing `.`.
fn sam_safe(s: &str) -> String {
    let ascii = deunicode::deunicode(s);
    let kept: String = ascii
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    kept.trim_matches('.').to_string()
}

fn cut_sam(s: &str, max: usize) -> String {
    s[..s.len().min(max)].trim_end_matches('.').to_string()
}

/// The `sAMAccountName` candidates for a guest, in order of preference. The first is the UPN's
/// local part; the others swap its tail for a suffix derived from the objectId, so two guests
/// whose names collide get distinct names without any search loop. The list is fixed and short:
/// when all are taken the caller reports a conflict.
pub fn sam_account_name_candidates(object_id: &str, upn: Option<&str>) -> Vec<String> {
    let mut base = sam_safe(upn.map(upn_local_part).unwrap_or(""));
    if base.is_empty() {
        base = FALLBACK.to_string();
    }
    let short = id_tail(object_id, 6);
    let long = id_tail(object_id, 12);
    let mut candidates = vec![
        cut_sam(&base, SAM_MAX),
        format!("{}-{short}", cut_sam(&base, SAM_MAX - 1 - short.len())),
        format!("{}-{long}", cut_sam(&base, SAM_MAX - 1 - long.len())),
    ];
    candidates.dedup();
    candidates
}

/// The `cn`: the readable name (display name, else given name and surname, else the UPN's local
/// part), cleaned and cut to 51 characters, then `_` and the last 12 hex digits of the objectId.
/// Unique because of the tail, readable because of the name, stable because it depends on nothing
/// else.
pub fn common_name(
    object_id: &str,
    display_name: Option<&str>,
    given_and_surname: Option<String>,
    upn: Option<&str>,
) -> String {
    let readable = [
        display_name.map(clean_text),
        given_and_surname.map(|s| clean_text(&s)),
        upn.map(|u| clean_text(upn_local_part(u))),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .unwrap_or_else(|| FALLBACK.to_string());
    let name = truncate_utf16(&readable, CN_NAME_MAX).trim_end();
    format!("{name}_{}", id_tail(object_id, ID_TAIL_LEN))
}

/// Windows AD's rules for a `sAMAccountName`, as a check the tests can call.
pub fn is_valid_sam_account_name(s: &str) -> bool {
    !s.is_empty()
        && utf16_len(s) <= SAM_MAX
        && !s.ends_with('.')
        && !s
            .chars()
            .any(|c| c.is_control() || SAM_FORBIDDEN.contains(c))
}

/// Windows AD's rules for a `cn` value, as a check the tests can call.
pub fn is_valid_common_name(s: &str) -> bool {
    !s.trim().is_empty() && utf16_len(s) <= CN_MAX && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b";

    #[test]
    fn sam_from_guest_upn() {
        let c = sam_account_name_candidates(
            ID,
            Some("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"),
        );
        assert_eq!(c[0], "alice_fabrikam.com");
        assert_eq!(c[1], "alice_fabrika-3f2a1b");
        assert_eq!(c[2], "alice_f-6c5d4e3f2a1b");
        assert!(c.iter().all(|s| is_valid_sam_account_name(s)));
    }

    #[test]
    fn sam_transliterates_and_never_ends_with_dot() {
        let c = sam_account_name_candidates(ID, Some("José.Müller_x.org#EXT#@t.onmicrosoft.com"));
        assert_eq!(c[0], "jose.muller_x.org");
        let c = sam_account_name_candidates(ID, Some("abcdefghijklmnopqrs.tuv@x"));
        assert_eq!(c[0], "abcdefghijklmnopqrs");
        let c = sam_account_name_candidates(ID, Some("..."));
        assert_eq!(c[0], "guest");
        let c = sam_account_name_candidates(ID, None);
        assert_eq!(c[0], "guest");
    }

    #[test]
    fn cn_keeps_readable_name_and_tail() {
        assert_eq!(
            common_name(ID, Some("  Alice, Smith\0 "), None, None),
            "Alice, Smith_6c5d4e3f2a1b"
        );
        let long = "x".repeat(300);
        let cn = common_name(ID, Some(&long), None, None);
        assert_eq!(utf16_len(&cn), CN_MAX);
        assert_eq!(
            common_name(ID, Some(" "), Some("Al B".into()), None),
            "Al B_6c5d4e3f2a1b"
        );
        assert_eq!(common_name(ID, None, None, None), "guest_6c5d4e3f2a1b");
    }

    #[test]
    fn cn_never_splits_surrogate_pairs() {
        let emoji = "😀".repeat(40);
        let cn = common_name(ID, Some(&emoji), None, None);
        assert!(utf16_len(&cn) <= CN_MAX);
        assert!(cn.starts_with(&"😀".repeat(25)));
    }

    #[test]
    fn non_guid_ids_still_give_hex_tails() {
        assert_eq!(id_tail("x", 12).len(), 12);
        assert!(id_tail("", 6).chars().all(|c| c.is_ascii_hexdigit()));
    }
}
