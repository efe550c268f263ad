//! Which token claims Veil believes, per issuer.
//!
//! A valid signature proves who the issuer says the user is; it does not make
//! the issuer an authority on Veil's groups and attributes. Without this,
//! any key in `[[auth.keys]]` (a development HS256 secret, a partner's
//! identity provider) could put `groups = ["privileged"]` in a token and be
//! exempted from masks. So an issuer asserts nothing beyond the directory
//! unless `[[auth.issuers]]` trusts it for groups, attributes or both, and
//! its groups can be namespaced with a prefix. Claims an issuer isn't trusted
//! for are ignored, not refused (a corporate token that carries groups still
//! signs in), and explain shows them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{AuthConfig, TrustedClaims};
use crate::error::{Result, VeilError};
use crate::model::identity::Attributes;

/// Longest `group_prefix` accepted.
const MAX_GROUP_PREFIX_CHARS: usize = 64;

/// What Veil believes in one issuer's tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerTrust {
    pub claims: TrustedClaims,
    /// Put before every group the issuer's tokens assert; may be empty.
    pub group_prefix: String,
}

/// Where a group or attribute value of a principal came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClaimSource {
    /// Veil's directory (`[[users]]` or `veil admin put-user`).
    Directory,
    /// A verified token from this issuer, which is trusted for the claim.
    Token { issuer: String },
    /// The `--group` / `--attr` of an explain request, taken as the claims a
    /// token from this issuer would carry.
    Explain { issuer: String },
}

impl ClaimSource {
    /// The issuer whose trust decides, for token-like sources.
    fn issuer(&self) -> Option<&str> {
        match self {
            ClaimSource::Directory => None,
            ClaimSource::Token { issuer } | ClaimSource::Explain { issuer } => Some(issuer),
        }
    }
}

impl fmt::Display for ClaimSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimSource::Directory => f.write_str("directory"),
            ClaimSource::Token { issuer } => write!(f, "token (issuer {issuer})"),
            ClaimSource::Explain { issuer } => {
                write!(
                    f,
                    "explain --group/--attr (as a token from issuer {issuer})"
                )
            }
        }
    }
}

/// Where each group and attribute value of a principal came from (a value
/// the directory and a trusted token both give has both sources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimSources {
    pub groups: BTreeMap<String, BTreeSet<ClaimSource>>,
    /// Attribute key, then value.
    pub attributes: BTreeMap<String, BTreeMap<String, BTreeSet<ClaimSource>>>,
}

impl ClaimSources {
    pub fn add(
        &mut self,
        source: &ClaimSource,
        groups: &BTreeSet<String>,
        attributes: &Attributes,
    ) {
        for g in groups {
            self.groups
                .entry(g.clone())
                .or_default()
                .insert(source.clone());
        }
        for (k, vs) in attributes {
            let values = self.attributes.entry(k.clone()).or_default();
            for v in vs {
                values.entry(v.clone()).or_default().insert(source.clone());
            }
        }
    }
}

/// Groups and attributes as a token (or an explain request) asserts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssertedClaims {
    pub groups: BTreeSet<String>,
    pub attributes: Attributes,
}

impl AssertedClaims {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.attributes.is_empty()
    }
}

/// What Veil believes of asserted claims, and what it ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedClaims {
    /// Where the admitted claims came from.
    pub source: ClaimSource,
    /// The issuer's trust that decided.
    pub trust: IssuerTrust,
    /// Trusted groups, with the issuer's prefix.
    pub groups: BTreeSet<String>,
    pub attributes: Attributes,
    /// Claims the issuer isn't trusted for, as asserted.
    pub ignored: AssertedClaims,
}

/// The trust of every configured issuer; issuers without an entry are
/// trusted for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimTrust {
    issuers: BTreeMap<String, IssuerTrust>,
}

impl ClaimTrust {
    /// `[[auth.issuers]]`, validated: each names an issuer of some
    /// `[[auth.keys]]` entry, at most once, with a usable prefix.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self> {
        let invalid = |m: String| VeilError::FailedPrecondition(format!("[[auth.issuers]]: {m}"));
        let mut issuers = BTreeMap::new();
        for entry in &cfg.issuers {
            let issuer = entry.issuer.as_str();
            if !cfg.keys.iter().any(|k| k.issuer == issuer) {
                return Err(invalid(format!(
                    "issuer '{issuer}' has no [[auth.keys]] entry; check its spelling against the keys' `issuer`"
                )));
            }
            let group_prefix = match &entry.group_prefix {
                None => String::new(),
                Some(p) => {
                    check_group_prefix(p, entry.trust_claims)
                        .map_err(|m| invalid(format!("issuer '{issuer}': group_prefix {m}")))?;
                    p.clone()
                }
            };
            let trust = IssuerTrust {
                claims: entry.trust_claims,
                group_prefix,
            };
            if issuers.insert(issuer.to_string(), trust).is_some() {
                return Err(invalid(format!(
                    "issuer '{issuer}' appears twice; give each issuer one entry (its keys share it)"
                )));
            }
        }
        Ok(Self { issuers })
    }

    /// The trust of `issuer` (nothing, when it has no entry).
    pub fn of(&self, issuer: &str) -> IssuerTrust {
        self.issuers.get(issuer).cloned().unwrap_or_default()
    }

    /// Keep the claims `source`'s issuer is trusted for, prefixing its
    /// groups; set the others aside. Directory claims are not admitted here:
    /// they need no trust.
    pub fn admit(&self, source: ClaimSource, asserted: AssertedClaims) -> AdmittedClaims {
        let trust = source.issuer().map(|i| self.of(i)).unwrap_or_default();
        let mut ignored = AssertedClaims::default();
        let groups = if trust.claims.groups() {
            asserted
                .groups
                .into_iter()
                .map(|g| format!("{}{g}", trust.group_prefix))
                .collect()
        } else {
            ignored.groups = asserted.groups;
            BTreeSet::new()
        };
        let attributes = if trust.claims.attributes() {
            asserted.attributes
        } else {
            ignored.attributes = asserted.attributes;
            Attributes::new()
        };
        AdmittedClaims {
            source,
            trust,
            groups,
            attributes,
            ignored,
        }
    }
}

fn check_group_prefix(p: &str, claims: TrustedClaims) -> std::result::Result<(), String> {
    if !claims.groups() {
        return Err(format!(
            "applies to groups, but trust_claims = \"{}\": trust the issuer for groups or remove the prefix",
            claims.as_str()
        ));
    }
    if p.is_empty() {
        return Err("is empty: remove it for no prefix".into());
    }
    if p.chars().count() > MAX_GROUP_PREFIX_CHARS {
        return Err(format!(
            "is longer than {MAX_GROUP_PREFIX_CHARS} characters"
        ));
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("may not contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(issuers: &str) -> AuthConfig {
        toml::from_str(&format!(
            "audience = \"veil\"\n\
             [[keys]]\nissuer = \"dev\"\nalgorithm = \"HS256\"\nsecret_file = \"s\"\n\
             [[keys]]\nissuer = \"idp1\"\nalgorithm = \"RS256\"\npublic_key_file = \"a.pem\"\n\
             [[keys]]\nissuer = \"idp1\"\nalgorithm = \"RS256\"\npublic_key_file = \"b.pem\"\nkid = \"2\"\n\
             [[keys]]\nissuer = \"idp2\"\njwks_file = \"jwks.json\"\n{issuers}"
        ))
        .unwrap()
    }

    fn trust(issuers: &str) -> ClaimTrust {
        ClaimTrust::from_config(&auth(issuers)).unwrap()
    }

    fn asserted() -> AssertedClaims {
        let mut attributes = Attributes::new();
        attributes.insert("state".into(), BTreeSet::from(["CA".to_string()]));
        AssertedClaims {
            groups: BTreeSet::from(["privileged".to_string(), "analysts".to_string()]),
            attributes,
        }
    }

    fn token(issuer: &str) -> ClaimSource {
        ClaimSource::Token {
            issuer: issuer.into(),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn issuers_without_an_entry_assert_nothing() {
        let t = trust("");
        let a = t.admit(token("dev"), asserted());
        assert_eq!(a.trust, IssuerTrust::default());
        assert!(a.groups.is_empty() && a.attributes.is_empty());
        assert_eq!(a.ignored, asserted(), "everything is set aside, not lost");
        // An issuer no key names (a token can't come from it) gets nothing either.
        assert!(t.admit(token("nobody"), asserted()).groups.is_empty());
    }

    #[test]
    fn each_trust_level_admits_its_claims_only() {
        let t = trust(
            "[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"groups\"\n\
             [[issuers]]\nissuer = \"idp1\"\ntrust_claims = \"attributes\"\n\
             [[issuers]]\nissuer = \"idp2\"\ntrust_claims = \"groups_and_attributes\"\n",
        );
        let groups = t.admit(token("dev"), asserted());
        assert_eq!(groups.groups, set(&["analysts", "privileged"]));
        assert!(groups.attributes.is_empty());
        assert_eq!(groups.ignored.attributes, asserted().attributes);
        assert!(groups.ignored.groups.is_empty());

        let attrs = t.admit(token("idp1"), asserted());
        assert!(attrs.groups.is_empty());
        assert_eq!(attrs.attributes, asserted().attributes);
        assert_eq!(attrs.ignored.groups, asserted().groups);

        let both = t.admit(token("idp2"), asserted());
        assert_eq!(both.groups, asserted().groups);
        assert_eq!(both.attributes, asserted().attributes);
        assert!(both.ignored.is_empty());

        let none = trust("[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"none\"\n");
        assert!(none.admit(token("dev"), asserted()).groups.is_empty());
    }

    #[test]
    fn a_prefix_namespaces_every_group_of_its_issuer_only() {
        let t = trust(
            "[[issuers]]\nissuer = \"idp2\"\ntrust_claims = \"groups\"\ngroup_prefix = \"idp2:\"\n\
             [[issuers]]\nissuer = \"idp1\"\ntrust_claims = \"groups\"\n",
        );
        let a = t.admit(token("idp2"), asserted());
        assert_eq!(a.groups, set(&["idp2:analysts", "idp2:privileged"]));
        // Already prefixed is prefixed again: the issuer can't name a group
        // outside its namespace.
        let mut c = AssertedClaims::default();
        c.groups.insert("idp2:x".into());
        assert_eq!(t.admit(token("idp2"), c).groups, set(&["idp2:idp2:x"]));
        // Another issuer's groups keep their names.
        assert_eq!(t.admit(token("idp1"), asserted()).groups, asserted().groups);
        // Explain's hypothetical claims go through the same trust.
        let e = t.admit(
            ClaimSource::Explain {
                issuer: "idp2".into(),
            },
            asserted(),
        );
        assert!(e.groups.contains("idp2:privileged"));
    }

    #[test]
    fn the_demo_trusts_nothing_until_its_example_is_uncommented() {
        let shipped: crate::config::Config = toml::from_str(crate::demo::DEMO_CONFIG).unwrap();
        let t = ClaimTrust::from_config(&shipped.auth).unwrap();
        assert_eq!(t.of("veil-demo"), IssuerTrust::default());
        let uncommented = crate::demo::DEMO_CONFIG
            .replace("# [[auth.issuers]]", "[[auth.issuers]]")
            .replace("# issuer = ", "issuer = ")
            .replace("# trust_claims = ", "trust_claims = ");
        let cfg: crate::config::Config = toml::from_str(&uncommented).unwrap();
        let t = ClaimTrust::from_config(&cfg.auth).unwrap();
        assert_eq!(t.of("veil-demo").claims, TrustedClaims::Groups);
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let err = |issuers: &str| {
            ClaimTrust::from_config(&auth(issuers))
                .unwrap_err()
                .message()
                .to_string()
        };
        assert!(
            err("[[issuers]]\nissuer = \"idp3\"\ntrust_claims = \"groups\"\n")
                .contains("no [[auth.keys]] entry")
        );
        assert!(
            err("[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"groups\"\n\
                 [[issuers]]\nissuer = \"dev\"\ntrust_claims = \"none\"\n")
            .contains("twice")
        );
        assert!(
            err("[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"attributes\"\ngroup_prefix = \"x:\"\n")
                .contains("trust the issuer for groups")
        );
        assert!(
            err("[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"groups\"\ngroup_prefix = \"\"\n")
                .contains("empty")
        );
        assert!(
            err("[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"groups\"\ngroup_prefix = \"a\\nb\"\n")
                .contains("control")
        );
        // Unknown levels and fields never parse.
        let unknown = toml::from_str::<AuthConfig>(
            "audience = \"veil\"\n[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"all\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("groups_and_attributes"), "{unknown}");
        assert!(
            toml::from_str::<AuthConfig>(
                "audience = \"veil\"\n[[issuers]]\nissuer = \"dev\"\ntrust = \"groups\"\n",
            )
            .is_err()
        );
    }
}
