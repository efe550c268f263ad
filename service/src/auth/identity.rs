//! Building a principal: the records (`crate::model::identity`) plus the
//! keyed fingerprint that ties tickets to exactly these claims.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeSet;

use crate::model::identity::{Attributes, ClientInfo, Identity, Permission, Principal};
use crate::secrets::SecretKey;

/// The principal for `identity` with these groups, attributes and
/// permissions, fingerprinted with `fingerprint_key`: the only way Veil
/// builds one (tests in layers below `auth` build theirs by hand).
pub fn principal(
    identity: Identity,
    groups: BTreeSet<String>,
    attributes: Attributes,
    permissions: BTreeSet<Permission>,
    fingerprint_key: &SecretKey,
    client: ClientInfo,
) -> Principal {
    let fingerprint = fingerprint_of(
        &identity,
        &groups,
        &attributes,
        &permissions,
        fingerprint_key,
    );
    Principal {
        identity,
        groups,
        attributes,
        permissions,
        fingerprint,
        client,
    }
}

/// Canonical, length-prefixed encoding so no two different principals can
/// produce the same bytes.
fn fingerprint_of(
    identity: &Identity,
    groups: &BTreeSet<String>,
    attributes: &Attributes,
    permissions: &BTreeSet<Permission>,
    key: &SecretKey,
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes()).expect("any key length");
    let mut put = |s: &str| {
        mac.update(&(s.len() as u64).to_be_bytes());
        mac.update(s.as_bytes());
    };
    put(&identity.issuer);
    put(&identity.subject);
    put(&groups.len().to_string());
    groups.iter().for_each(|g| put(g));
    put(&attributes.len().to_string());
    for (k, vs) in attributes {
        put(k);
        put(&vs.len().to_string());
        vs.iter().for_each(|v| put(v));
    }
    put(&permissions.len().to_string());
    permissions.iter().for_each(|p| put(p.as_str()));
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(groups: &[&str], attrs: &[(&str, &str)]) -> Principal {
        let mut a = Attributes::new();
        for (k, v) in attrs {
            a.entry(k.to_string()).or_default().insert(v.to_string());
        }
        principal(
            Identity::new("iss", "alice"),
            groups.iter().map(|s| s.to_string()).collect(),
            a,
            BTreeSet::new(),
            &SecretKey::clone(
                &crate::secrets::MasterKey::from_bytes([3; 32])
                    .derive(crate::secrets::KeyPurpose::Fingerprint),
            ),
            ClientInfo::default(),
        )
    }

    #[test]
    fn fingerprint_changes_with_groups_and_attributes() {
        let a = p(&["x"], &[]);
        assert_eq!(a.fingerprint, p(&["x"], &[]).fingerprint);
        assert_ne!(a.fingerprint, p(&["y"], &[]).fingerprint);
        assert_ne!(a.fingerprint, p(&["x"], &[("state", "CA")]).fingerprint);
        // Length prefixes: a group "ab" differs from groups "a" and "b".
        assert_ne!(p(&["ab"], &[]).fingerprint, p(&["a", "b"], &[]).fingerprint);
    }
}
