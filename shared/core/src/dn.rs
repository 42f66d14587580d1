//! Distinguished names as RFC 4514 strings: escaping attribute values, parsing DNs back into
//! their RDNs, and comparing DNs the way Active Directory does (attribute types and values
//! case-insensitively). Hand-written because no maintained crate parses RFC 4514 DNs; filter
//! escaping (RFC 4515) is left to the LDAP adapter's library.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DnError {
    #[error("DN {dn:?}: {reason}")]
    Invalid { dn: String, reason: &'static str },
}

/// One attribute-type-and-value of an RDN, the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    pub attribute: String,
    pub value: String,
}

/// A relative distinguished name: one or more AVAs joined by `+`.
pub type Rdn = Vec<Ava>;

/// Escapes an attribute value for use in a DN string (RFC 4514 §2.4). Besides what the RFC
/// requires, `=` and every control character are escaped too, which the RFC allows and which
/// keeps the string unambiguous to humans and to AD.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Builds `<attribute>=<escaped value>,<parent>`.
pub fn child(attribute: &str, value: &str, parent: &str) -> String {
    format!("{attribute}={},{parent}", escape_value(value))
}

/// Parses a DN string into its RDNs, most specific first. Accepts RFC 4514 strings and the
/// common leniencies of RFC 2253-era tools (spaces after separators and around `=`).
pub fn parse(dn: &str) -> Result<Vec<Rdn>, DnError> {
    let invalid = |reason| DnError::Invalid {
        dn: dn.to_string(),
        reason,
    };
    let mut rdns = Vec::new();
    if dn.trim().is_empty() {
        return Ok(rdns);
    }
    let bytes = dn.as_bytes();
    let mut i = 0;
    let mut rdn: Rdn = Vec::new();
    loop {
        // attribute type
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            if matches!(bytes[i], b',' | b'+' | b'\\') {
                return Err(invalid("attribute type without '='"));
            }
            i += 1;
        }
        if i == bytes.len() {
            return Err(invalid("attribute type without '='"));
        }
        let attribute = dn[start..i].trim().to_string();
        if attribute.is_empty() {
            return Err(invalid("empty attribute type"));
        }
        i += 1; // '='
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'#' {
            return Err(invalid("BER-encoded (#hex) values are not supported"));
        }
        // attribute value: raw bytes with escapes decoded, then checked as UTF-8
        let mut value = Vec::new();
        // index in `value` after the last escaped byte, so escaped trailing spaces survive trimming
        let mut keep = 0;
        while i < bytes.len() && !matches!(bytes[i], b',' | b'+' | b';') {
            match bytes[i] {
                b'\\' => {
                    let next = *bytes.get(i + 1).ok_or_else(|| invalid("dangling '\\'"))?;
                    if next.is_ascii_hexdigit() {
                        let pair = dn
                            .get(i + 1..i + 3)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| invalid("bad hex escape"))?;
                        value.push(pair);
                        i += 3;
                    } else if matches!(
                        next,
                        b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b' ' | b'#' | b'='
                    ) {
                        value.push(next);
                        i += 2;
                    } else {
                        return Err(invalid("escape of a character that needs none"));
                    }
                    keep = value.len();
                }
                b'"' | b'<' | b'>' => return Err(invalid("unescaped special character")),
                b => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        while value.len() > keep && value.last() == Some(&b' ') {
            value.pop();
        }
        let value = String::from_utf8(value).map_err(|_| invalid("value is not UTF-8"))?;
        rdn.push(Ava { attribute, value });
        if i == bytes.len() {
            rdns.push(rdn);
            return Ok(rdns);
        }
        if bytes[i] != b'+' {
            rdns.push(std::mem::take(&mut rdn));
        }
        i += 1;
        if i == bytes.len() {
            return Err(invalid("trailing separator"));
        }
    }
}

/// The value of the first AVA of the first RDN (`cn` of `CN=x,OU=y`).
pub fn first_value(dn: &str) -> Result<String, DnError> {
    parse(dn)?
        .into_iter()
        .next()
        .and_then(|rdn| rdn.into_iter().next())
        .map(|ava| ava.value)
        .ok_or_else(|| DnError::Invalid {
            dn: dn.to_string(),
            reason: "empty DN",
        })
}

/// The parent DN, re-serialised canonically. `None` for a DN of one RDN or one that does not parse.
pub fn parent(dn: &str) -> Option<String> {
    let rdns = parse(dn).ok()?;
    (rdns.len() > 1).then(|| to_string(&rdns[1..]))
}

/// Serialises RDNs back into an RFC 4514 string.
pub fn to_string(rdns: &[Rdn]) -> String {
    rdns.iter()
        .map(|rdn| {
            rdn.iter()
                .map(|ava| format!("{}={}", ava.attribute, escape_value(&ava.value)))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn normalized(dn: &str) -> Option<Vec<Vec<(String, String)>>> {
    Some(
        parse(dn)
            .ok()?
            .into_iter()
            .map(|rdn| {
                let mut avas: Vec<_> = rdn
                    .into_iter()
                    .map(|a| (a.attribute.to_lowercase(), a.value.to_lowercase()))
                    .collect();
                avas.sort();
                avas
            })
            .collect(),
    )
}

/// DN equality as AD sees it: same RDNs, types and values compared case-insensitively.
/// DNs that do not parse are equal to nothing.
pub fn same(a: &str, b: &str) -> bool {
    matches!((normalized(a), normalized(b)), (Some(a), Some(b)) if a == b)
}

/// True when `dn` is `ancestor` or lies below it.
pub fn is_within(dn: &str, ancestor: &str) -> bool {
    match (normalized(dn), normalized(ancestor)) {
        (Some(dn), Some(anc)) => !anc.is_empty() && dn.len() >= anc.len() && dn.ends_with(&anc),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials_and_edges() {
        assert_eq!(escape_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_value(" #x "), "\\ #x\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
        assert_eq!(escape_value("a\0b"), "a\\00b");
        assert_eq!(escape_value("q\"<>;=\\"), "q\\\"\\<\\>\\;\\=\\\\");
        assert_eq!(escape_value("é😀"), "é😀");
    }

    #[test]
    fn parses_ad_style_dns() {
        let rdns = parse("CN=Smith\\, Al\\2C Jr_1a2b,OU=Guests, DC=corp,DC=example").unwrap();
        assert_eq!(rdns.len(), 4);
        assert_eq!(rdns[0][0].value, "Smith, Al, Jr_1a2b");
        assert_eq!(rdns[2][0].attribute, "DC");
        assert_eq!(first_value("CN=\\C3\\A9t\\C3\\A9,DC=x").unwrap(), "été");
        assert_eq!(parse("").unwrap(), Vec::<Rdn>::new());
    }

    #[test]
    fn multi_valued_rdn() {
        let rdns = parse("CN=a+UID=b,DC=x").unwrap();
        assert_eq!(rdns[0].len(), 2);
        assert!(same("UID=b+CN=a,DC=x", "cn=A+uid=B,dc=X"));
    }

    #[test]
    fn rejects_broken_dns() {
        for bad in [
            "CN", "CN=a,", "CN=a\\", "CN=a\\zz", "CN=#0403", "CN=a\"b", "=x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parent_and_containment() {
        assert_eq!(
            parent("CN=x\\,y,OU=Guests,DC=corp").as_deref(),
            Some("OU=Guests,DC=corp")
        );
        assert!(is_within("CN=x,OU=Guests,DC=corp", "ou=guests,dc=CORP"));
        assert!(is_within("OU=Guests,DC=corp", "OU=Guests,DC=corp"));
        assert!(!is_within("CN=x,OU=NotGuests,DC=corp", "OU=Guests,DC=corp"));
        assert!(!is_within("CN=x,OU=Guests,DC=corp", ""));
    }
}
