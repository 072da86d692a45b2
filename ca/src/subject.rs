//! Distinguished names as lists of `(type, value)` pairs, for certificates an enterprise
//! profile issues (seed 002): the attribute types a subject may carry, to and from
//! rcgen's and x509-cert's forms.

use rcgen::{DistinguishedName, DnType, DnValue};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Tag, Tagged};

/// `(short name, OID)` of the attribute types taken, most common first.
const TYPES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
];

/// An attribute type the subject cannot carry, or a value it cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("subject attribute {0}: not a type or value this CA writes")]
pub struct SubjectError(pub String);

/// The rcgen name for `attributes`.
pub fn to_rcgen(attributes: &[(String, String)]) -> Result<DistinguishedName, SubjectError> {
    let mut dn = DistinguishedName::new();
    for (kind, value) in attributes {
        let (_, oid) = TYPES.iter().find(|(k, _)| k == kind).ok_or_else(|| SubjectError(kind.clone()))?;
        if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
            return Err(SubjectError(kind.clone()));
        }
        let arcs: Vec<u64> = oid.split('.').filter_map(|a| a.parse().ok()).collect();
        let value = match *kind == "emailAddress" || *kind == "DC" {
            // RFC 5280: IA5String for these two.
            true => DnValue::Ia5String(value.clone().try_into().map_err(|_| SubjectError(kind.clone()))?),
            false => DnValue::Utf8String(value.clone()),
        };
        dn.push(DnType::from_oid(&arcs), value);
    }
    Ok(dn)
}

/// The attributes of `name`, or `None` when it has a type or value form not in the list
/// (a multi-valued RDN, a type this CA does not write, a non-string value).
pub fn from_name(name: &x509_cert::name::Name) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for rdn in &name.0 {
        let [atv] = rdn.0.as_slice() else { return None };
        let kind = TYPES.iter().find(|(_, oid)| ObjectIdentifier::new(oid).is_ok_and(|o| o == atv.oid))?.0;
        if !matches!(atv.value.tag(), Tag::Utf8String | Tag::PrintableString | Tag::Ia5String) {
            return None;
        }
        out.push((kind.to_string(), String::from_utf8(atv.value.value().to_vec()).ok()?));
    }
    Some(out)
}
