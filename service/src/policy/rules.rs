//! What policies say, as rules: validating a written policy
//! ([`PolicySpecExt::validate`]) into the form Veil enforces, whom a
//! condition admits, how masks of equal rank combine, and tags. The records
//! themselves live in `crate::model::policy`.

use super::differential_privacy::DpPolicy;
use crate::error::{Result, VeilError};
use crate::model::identity::Principal;
use crate::model::policy::{
    Clause, Condition, DataRule, DifferentialPrivacySpec, MaskSpec, PolicyRule, PolicySpec,
    RowFilterSpec, RowRuleSpec, SubscriptionSpec,
};

/// Whom a condition admits.
pub trait ConditionExt {
    /// Does the principal satisfy the condition (any listed group, attribute
    /// value or user)?
    fn matches(&self, p: &Principal, default_issuer: &str) -> bool;
}

impl ConditionExt for Condition {
    /// Does the principal satisfy the condition (any listed group, attribute
    /// value or user)?
    fn matches(&self, p: &Principal, default_issuer: &str) -> bool {
        self.groups.iter().any(|g| p.in_group(g))
            || self.attributes.iter().any(|(k, vs)| {
                p.attribute(k)
                    .is_some_and(|have| vs.iter().any(|v| have.contains(v)))
            })
            || self
                .users
                .iter()
                .any(|u| u.resolve(default_issuer) == p.identity)
            || self.permissions.iter().any(|x| p.permissions.contains(x))
    }
}

/// Whom a subscription admits.
pub trait SubscriptionExt {
    /// Does the principal satisfy the subscription itself (approvals apart)?
    fn admits(&self, p: &Principal, default_issuer: &str) -> bool;
}

impl SubscriptionExt for SubscriptionSpec {
    fn admits(&self, p: &Principal, default_issuer: &str) -> bool {
        self.anyone
            || Condition {
                groups: self.groups.clone(),
                attributes: self.attributes.clone(),
                users: self.users.clone(),
                permissions: self.permissions.clone(),
            }
            .matches(p, default_issuer)
    }
}

/// How two masks of equal restrictiveness combine.
pub trait MaskSpecExt {
    /// Where this mask sorts among masks of its rank: comparable roundings
    /// coarsest first (see [`MaskSpecExt::combine_tie`]).
    fn tie_order(&self) -> (u8, f64);
    /// Of two masks of equal restrictiveness, the one to apply: the coarser
    /// of two comparable roundings; otherwise (two different regexes, a
    /// regex and a rounding) neither hides what the other shows, so the
    /// column is hashed instead. `None` means "keep `self`".
    fn combine_tie(&self, other: &MaskSpec) -> Option<MaskSpec>;
}

impl MaskSpecExt for MaskSpec {
    fn tie_order(&self) -> (u8, f64) {
        match self {
            MaskSpec::Round(r) => match (r.digits, r.bucket, r.unit) {
                (Some(d), ..) => (0, f64::from(d)),
                (_, Some(b), _) => (1, -b),
                (.., Some(u)) => (2, -f64::from(u as u8)),
                _ => (3, 0.0),
            },
            _ => (4, 0.0),
        }
    }

    fn combine_tie(&self, other: &MaskSpec) -> Option<MaskSpec> {
        // Two constants (or nulls, or hashes) hide the value equally well;
        // of a hash and a reversible mask, the hash (nobody can reverse it).
        if self.restrictiveness() >= 2 {
            return (*other == MaskSpec::Hash && *self != MaskSpec::Hash).then_some(MaskSpec::Hash);
        }
        if self == other {
            return None;
        }
        if let (MaskSpec::Round(a), MaskSpec::Round(b)) = (self, other) {
            match (a.digits, b.digits, a.bucket, b.bucket, a.unit, b.unit) {
                (Some(x), Some(y), ..) => return (y < x).then(|| other.clone()),
                (_, _, Some(x), Some(y), ..) => return (y > x).then(|| other.clone()),
                (.., Some(x), Some(y)) => return (y > x).then(|| other.clone()),
                _ => {}
            }
        }
        Some(MaskSpec::Hash)
    }
}

fn validate_mask(mask: &MaskSpec) -> std::result::Result<(), String> {
    match mask {
        MaskSpec::Regex(r) => {
            if r.pattern.is_empty() {
                return Err("a regex mask needs a non-empty `pattern`".into());
            }
            regex::Regex::new(&r.pattern)
                .map(|_| ())
                .map_err(|e| format!("the regex mask's pattern does not compile: {e}"))
        }
        MaskSpec::Round(r) => {
            let set = [r.digits.is_some(), r.bucket.is_some(), r.unit.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                return Err(
                    "a rounding mask is exactly one of `digits`, `bucket` or `unit`".into(),
                );
            }
            if let Some(d) = r.digits
                && !(-38..=38).contains(&d)
            {
                return Err("rounding `digits` must be between -38 and 38".into());
            }
            if let Some(b) = r.bucket
                && !(b.is_finite() && b > 0.0)
            {
                return Err("a rounding `bucket` must be a positive number".into());
            }
            Ok(())
        }
        MaskSpec::Constant(v) => match v {
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                Err("a constant mask's value must be a string, number, boolean or null".into())
            }
            _ => Ok(()),
        },
        MaskSpec::KAnonymity(k) => {
            if !(2..=1_000_000).contains(&k.k) {
                return Err(
                    "k-anonymity's `k` is between 2 and 1000000 (k = 1 would change nothing)"
                        .into(),
                );
            }
            Ok(())
        }
        MaskSpec::Hash | MaskSpec::Null | MaskSpec::Reversible | MaskSpec::FormatPreserving => {
            Ok(())
        }
    }
}

fn validate_row_filter(f: &RowFilterSpec) -> std::result::Result<RowRuleSpec, String> {
    if let Some(percent) = f.sample {
        if f.attribute.is_some() || f.within.is_some() || f.where_sql.is_some() {
            return Err(
                "a `sample` row filter takes only its row-key `column` or `column_tag`".into(),
            );
        }
        if !(percent.is_finite() && percent > 0.0 && percent < 100.0) {
            return Err(format!(
                "`sample = {percent}`: the percentage of rows kept must be above 0 and below 100"
            ));
        }
        if f.column.is_some() == f.column_tag.is_some() {
            return Err(
                "a `sample` row filter needs exactly one row-key `column` or `column_tag` (a high-cardinality column such as the primary key)"
                    .into(),
            );
        }
        return Ok(RowRuleSpec::Sample {
            column: f.column.clone(),
            column_tag: f.column_tag.clone(),
            percent,
        });
    }
    if let Some(sql) = &f.where_sql {
        if f.attribute.is_some()
            || f.within.is_some()
            || f.column.is_some()
            || f.column_tag.is_some()
        {
            return Err("a `where` row filter takes no other fields".into());
        }
        if sql.trim().is_empty() {
            return Err("the row filter's `where` is empty".into());
        }
        return Ok(RowRuleSpec::Where(sql.clone()));
    }
    if let Some(within) = &f.within {
        if f.attribute.is_some() || f.column_tag.is_some() {
            return Err("a `within` row filter takes only an optional event-time `column`".into());
        }
        return Ok(RowRuleSpec::Window {
            column: f.column.clone(),
            seconds: parse_duration("within", within)?,
        });
    }
    let Some(attribute) = f.attribute.as_ref().filter(|a| !a.trim().is_empty()) else {
        return Err(
            "a row filter is one of: `column`/`column_tag` with `attribute` (matching), `where`, or `within`"
                .into(),
        );
    };
    if f.column.is_some() == f.column_tag.is_some() {
        return Err("a matching row filter needs exactly one of `column` or `column_tag`".into());
    }
    Ok(RowRuleSpec::Matching {
        column: f.column.clone(),
        column_tag: f.column_tag.clone(),
        attribute: attribute.clone(),
    })
}

/// `"90 minutes"`, `"24 hours"`, `"7 days"` (also `min`/`m`, `h`, `d`) in
/// seconds; `field` names the setting in messages.
pub fn parse_duration(field: &str, s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{field} = \"{s}\"`: expected a positive count then minutes, hours or days, as in \"7 days\""))?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        other => {
            return Err(format!(
                "`{field} = \"{s}\"`: unknown unit '{other}' (use minutes, hours or days)"
            ));
        }
    };
    n.checked_mul(per)
        .filter(|secs| *secs <= 100 * 366 * 86_400)
        .ok_or_else(|| format!("`{field} = \"{s}\"` is longer than a century"))
}

/// Seconds as [`parse_duration`] reads them, in the largest unit that
/// counts them exactly (`"30 days"`, `"1 hour"`, `"90 minutes"`; else
/// `"45 s"`).
pub fn duration_text(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s > 0 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s > 0 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s > 0 && s % 60 == 0 => (s / 60, "minute"),
        s => return format!("{s} s"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Checking a written policy.
pub trait PolicySpecExt {
    /// The policy's rule, or why it can't be enforced as written.
    fn validate(&self) -> Result<PolicyRule>;
}

impl PolicySpecExt for PolicySpec {
    fn validate(&self) -> Result<PolicyRule> {
        let bad = |m: String| VeilError::InvalidArgument(format!("policy '{}': {m}", self.name));
        if self.name.trim().is_empty() || self.name.trim() != self.name || self.name.len() > 200 {
            return Err(VeilError::InvalidArgument(
                "a policy needs a non-empty name without leading or trailing spaces (at most 200 characters)".into(),
            ));
        }
        // Names are shown in listings, logs and the audit: no character
        // that breaks a line or changes how the text around it reads.
        let invisible = |c: char| {
            c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
        };
        if self.name.chars().any(invisible) {
            return Err(VeilError::InvalidArgument(
                "a policy name may not hold control characters or invisible formatting (line breaks, tabs, direction overrides, zero-width characters)".into(),
            ));
        }
        if self.dataset.is_some() != self.tags.is_empty() {
            return Err(bad(
                "set either `dataset` (a local policy) or `tags` (a global policy), not both or neither"
                    .into(),
            ));
        }
        if self.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(bad("a tag is empty".into()));
        }
        if self.dataset.is_some() && !self.restricted_to.is_empty() {
            return Err(bad(
                "`restricted_to` limits a global policy to datasets its owners own; a local policy already names its dataset".into(),
            ));
        }
        if self.mask_where.is_some()
            && self.mask.is_none()
            && !self.chain.iter().any(|b| b.mask.is_some())
        {
            return Err(bad("`mask_where` only applies to masks".into()));
        }
        if self.mask_where.is_some()
            && self
                .mask
                .iter()
                .chain(self.chain.iter().filter_map(|b| b.mask.as_ref()))
                .any(|m| matches!(m, MaskSpec::KAnonymity(_)))
        {
            return Err(bad(
                "k-anonymization counts whole groups of rows, so it can't be conditional: drop `mask_where`".into(),
            ));
        }
        if let Some(s) = &self.subscription {
            if self.mask.is_some()
                || self.row_filter.is_some()
                || self.differential_privacy.is_some()
                || !self.chain.is_empty()
            {
                return Err(bad(
                    "a policy is exactly one of `subscription`, `mask` or `row_filter` (or a `chain` of masks or of row filters)".into(),
                ));
            }
            let kinds = [
                s.anyone,
                s.on_request,
                !(s.groups.is_empty() && s.attributes.is_empty() && s.permissions.is_empty()),
                !s.users.is_empty(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(bad("a subscription is exactly one of `anyone = true`, `on_request = true`, `groups`/`attributes`/`permissions`, or `users`".into()));
            }
            if !s.approvers.is_empty() && !s.on_request {
                return Err(bad(
                    "`approvers` only applies to `on_request` subscriptions".into(),
                ));
            }
            if !self.columns.is_empty() {
                return Err(bad("`columns` only applies to masks".into()));
            }
            return Ok(PolicyRule::Subscription(s.clone()));
        }
        let data_rule = |mask: &Option<MaskSpec>,
                         row: &Option<RowFilterSpec>,
                         dp: &Option<DifferentialPrivacySpec>|
         -> std::result::Result<Option<DataRule>, String> {
            match (mask, row, dp) {
                (Some(m), None, None) => {
                    validate_mask(m)?;
                    Ok(Some(DataRule::Mask(m.clone())))
                }
                (None, Some(r), None) => Ok(Some(DataRule::RowFilter(validate_row_filter(r)?))),
                (None, None, Some(dp)) => {
                    DpPolicy::validate(dp).map_err(|m| format!("differential_privacy: {m}"))?;
                    Ok(Some(DataRule::DifferentialPrivacy(Box::new(dp.clone()))))
                }
                (None, None, None) => Ok(None),
                _ => Err("a step is one of a mask, a row filter or differential privacy".into()),
            }
        };
        let clauses = if self.chain.is_empty() {
            let Some(rule) =
                data_rule(&self.mask, &self.row_filter, &self.differential_privacy).map_err(bad)?
            else {
                return Err(bad(
                    "a policy is exactly one of `subscription`, `mask`, `row_filter`, `differential_privacy` or a `chain`"
                        .into(),
                ));
            };
            let mut clauses = Vec::new();
            if !self.except.is_empty() {
                clauses.push(Clause {
                    who: Some(self.except.clone()),
                    rule: None,
                });
            }
            clauses.push(Clause {
                who: None,
                rule: Some(rule),
            });
            clauses
        } else {
            if self.mask.is_some()
                || self.row_filter.is_some()
                || self.differential_privacy.is_some()
                || !self.except.is_empty()
            {
                return Err(bad(
                    "a `chain` policy states its masks, row filters or differential privacy (and exemptions) in its steps; drop the top-level `mask`, `row_filter`, `differential_privacy` and `except`".into(),
                ));
            }
            let last = self.chain.len() - 1;
            let mut clauses = Vec::new();
            for (i, b) in self.chain.iter().enumerate() {
                let step = |m: &str| bad(format!("chain step {}: {m}", i + 1));
                match (&b.who, b.otherwise) {
                    (Some(_), true) => {
                        return Err(step("a step has `who` or is the `otherwise`, not both"));
                    }
                    (None, false) => {
                        return Err(step(
                            "a step needs `who = {...}` (or `otherwise = true` on the last one)",
                        ));
                    }
                    (Some(c), false) if c.is_empty() => {
                        return Err(step("`who` names no group, attribute or user"));
                    }
                    (None, true) if i != last => {
                        return Err(step("only the last step may be `otherwise`"));
                    }
                    (Some(_), false) if i == last => {
                        return Err(step(
                            "a chain must end with a blanket `otherwise = true` step",
                        ));
                    }
                    _ => {}
                }
                let rule = data_rule(&b.mask, &b.row_filter, &b.differential_privacy)
                    .map_err(|m| step(&m))?;
                if rule.is_some() == b.exempt {
                    return Err(step(
                        "a step has exactly one of `mask`, `row_filter`, `differential_privacy` or `exempt = true`",
                    ));
                }
                clauses.push(Clause {
                    who: b.who.clone(),
                    rule,
                });
            }
            if clauses.len() < 2 {
                return Err(bad(
                    "a chain has at least one `who` step before its `otherwise`".into(),
                ));
            }
            let masks = clauses
                .iter()
                .filter(|c| matches!(c.rule, Some(DataRule::Mask(_))))
                .count();
            let rows = clauses
                .iter()
                .filter(|c| matches!(c.rule, Some(DataRule::RowFilter(_))))
                .count();
            let private = clauses
                .iter()
                .filter(|c| matches!(c.rule, Some(DataRule::DifferentialPrivacy(_))))
                .count();
            if [masks, rows, private].iter().filter(|n| **n > 0).count() > 1 {
                return Err(bad(
                    "a chain is all masks, all row filters or all differential privacy".into(),
                ));
            }
            if masks + rows + private == 0 {
                return Err(bad(
                    "every step of this chain is exempt: it does nothing".into()
                ));
            }
            clauses
        };
        let masks = clauses
            .iter()
            .any(|c| matches!(c.rule, Some(DataRule::Mask(_))));
        if masks {
            if self.dataset.is_some() && self.columns.is_empty() {
                return Err(bad("a local mask needs `columns`".into()));
            }
            if !self.tags.is_empty() && !self.columns.is_empty() {
                return Err(bad(
                    "a global mask selects columns by `tags`; drop `columns`".into(),
                ));
            }
        } else if !self.columns.is_empty() {
            return Err(bad("`columns` only applies to masks".into()));
        }
        Ok(PolicyRule::Data(clauses))
    }
}

/// Whether `tag` is a well-formed tag to put on a column: dot-separated
/// parts of letters, digits, `_`, `-`, `:` and `/`, at most 128 bytes. A tag
/// with a space, a comma or an invisible character would look like another
/// tag (or two) while no policy on that tag matched it.
pub fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let shown: String = tag.chars().take(64).filter(|c| !c.is_control()).collect();
    if tag.is_empty() || tag.len() > 128 {
        return Err(format!("tag '{shown}' must be 1 to 128 bytes"));
    }
    let part_ok =
        |p: &str| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "_-:/".contains(c));
    if !tag.split('.').all(part_ok) {
        return Err(format!(
            "tag '{shown}' must be dot-separated parts of letters, digits, '_', '-', ':' and '/' (like PII.email)"
        ));
    }
    Ok(())
}

/// `PII` covers `pii` and `PII.email`, but not `PIIX`.
pub fn tag_covers(policy_tag: &str, tag: &str) -> bool {
    let (p, t) = (policy_tag.to_ascii_lowercase(), tag.to_ascii_lowercase());
    t == p || (t.len() > p.len() && t.starts_with(&p) && t.as_bytes()[p.len()] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> PolicySpec {
        toml::from_str(toml_text).unwrap()
    }

    /// A duration reads back as the seconds it shows, in its largest
    /// exact unit.
    #[test]
    fn durations_read_back_as_written() {
        for (secs, text) in [
            (30 * 86_400, "30 days"),
            (86_400, "1 day"),
            (36 * 3_600, "36 hours"),
            (3_600, "1 hour"),
            (90 * 60, "90 minutes"),
            (60, "1 minute"),
            (45, "45 s"),
            (0, "0 s"),
        ] {
            assert_eq!(duration_text(secs), text);
            if secs % 60 == 0 && secs > 0 {
                assert_eq!(parse_duration("x", text), Ok(secs), "{text}");
            }
        }
    }

    #[test]
    fn policy_names_hold_no_control_or_invisible_characters() {
        let named = |name: &str| {
            let mut p = spec("name = \"x\"\ndataset = \"a.b\"\nsubscription = { anyone = true }");
            p.name = name.to_string();
            p.validate()
        };
        assert!(named("trials-for-analysts (EU) é").is_ok());
        for bad in [
            "ctl\nx",
            "a\tb",
            "rtl\u{202E}x",
            "zero\u{200B}width",
            "nul\0",
        ] {
            let e = named(bad).unwrap_err();
            assert!(e.to_string().contains("control characters"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tags_are_checked_before_they_go_on_a_column() {
        for good in [
            "PII",
            "PII.email",
            "phi.dob",
            "gdpr:art9/health",
            "a_b-c.D1",
        ] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "PII .email",
            "PII\u{200b}.email",
            "a,b",
            "x=y",
            "\x1b[31m",
            "PII.",
            ".PII",
            "PII..email",
            &"x".repeat(129),
        ] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_are_hierarchical_and_case_insensitive() {
        assert!(tag_covers("PII", "pii"));
        assert!(tag_covers("PII", "pii.Email"));
        assert!(!tag_covers("PII", "PIIX"));
        assert!(!tag_covers("PII.email", "PII"));
    }

    #[test]
    fn config_forms_parse_and_validate() {
        let s = spec("name = \"a\"\ndataset = \"x.y\"\nsubscription = { groups = [\"g\"] }");
        assert!(matches!(s.validate().unwrap(), PolicyRule::Subscription(_)));
        let s = spec(
            "name = \"m\"\ntags = [\"PII\"]\nmask = \"hash\"\nexcept = { groups = [\"admin\"] }",
        );
        let PolicyRule::Data(clauses) = s.validate().unwrap() else {
            panic!("a data policy")
        };
        assert_eq!(clauses.len(), 2, "except, then everyone");
        assert_eq!(clauses[0].rule, None);
        assert_eq!(clauses[1].rule, Some(DataRule::Mask(MaskSpec::Hash)));
        let s = spec(
            "name = \"c\"\ndataset = \"x.y\"\ncolumns = [\"ip\"]\nmask = { constant = \"REDACTED\" }",
        );
        assert!(matches!(
            s.validate().unwrap(),
            PolicyRule::Data(c) if matches!(c[0].rule, Some(DataRule::Mask(MaskSpec::Constant(_))))
        ));
        let s = spec(
            "name = \"r\"\ndataset = \"x.y\"\nrow_filter = { column = \"state\", attribute = \"state\" }",
        );
        assert!(matches!(
            s.validate().unwrap(),
            PolicyRule::Data(c) if matches!(c[0].rule, Some(DataRule::RowFilter(RowRuleSpec::Matching { .. })))
        ));
    }

    #[test]
    fn ambiguous_policies_are_refused() {
        for bad in [
            "name = \"a\"\nsubscription = { anyone = true }",
            "name = \"a\"\ndataset = \"x.y\"\ntags = [\"t\"]\nmask = \"null\"",
            "name = \"a\"\ndataset = \"x.y\"\nmask = \"null\"",
            "name = \"a\"\ndataset = \"x.y\"\nsubscription = { anyone = true, groups = [\"g\"] }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { attribute = \"s\" }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { where = \"x\", attribute = \"s\" }",
            "name = \"a\"\ndataset = \"x.y\"\nrow_filter = { within = \"7 weeks\" }",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nmask = { round = { digits = 1, bucket = 5 } }",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nmask = { regex = { pattern = \"(\", replacement = \"x\" } }",
            "name = \"a\"\ndataset = \"x.y\"\nsubscription = { groups = [\"g\"], approvers = { groups = [\"s\"] } }",
            // Chains: must end with a blanket otherwise; one kind of rule.
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ who = { groups = [\"g\"] }, mask = \"null\" }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ otherwise = true, mask = \"null\" }, { who = { groups = [\"g\"] }, exempt = true }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ who = { groups = [\"g\"] }, mask = \"null\" }, { otherwise = true, row_filter = { where = \"x\" } }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nmask = \"null\"\nchain = [{ who = { groups = [\"g\"] }, exempt = true }, { otherwise = true, mask = \"null\" }]",
            "name = \"a\"\ndataset = \"x.y\"\ncolumns = [\"c\"]\nchain = [{ who = { groups = [\"g\"] }, exempt = true }, { otherwise = true, exempt = true }]",
        ] {
            assert!(spec(bad).validate().is_err(), "{bad}");
        }
    }
}
