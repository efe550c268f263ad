//! Sensitive data discovery: sample a dataset's values and propose column
//! tags (e-mail, SSN, phone, payment card, IP address, date of birth,
//! person name, postal code), each with a confidence and a reason.
//!
//! Two kinds of evidence are weighed per column:
//! * the **values**: what share of the sampled, non-null values has the
//!   shape of the kind, checked strictly where a check exists (Luhn and a
//!   card-network prefix for cards, the SSA's rules for SSNs, a parse for IP
//!   addresses, a plausible age for birth dates, a dictionary of common
//!   given names and surnames for names);
//! * the **header**: the column's name, split into words (`dateOfBirth`,
//!   `date_of_birth` and `DOB` all hint at a birth date; `product_name` is
//!   evidence *against* a person's name).
//!
//! Distinctive formats (`123-45-6789`, `(415) 555-0134`) need no header;
//! bare digit strings (nine digits, five digits) are only proposed when the
//! header agrees, since so many identifiers look like them.
//!
//! Text, integer (any width), decimal, float, date and timestamp columns are
//! examined; numbers as their digits (whole values only, floats only where
//! they hold every digit), since exports often type an SSN, a phone or a
//! card number as a number. Every other column is listed as skipped, with
//! its type and why.
//!
//! A proposal carries counts and reasons, never a sampled value: whoever
//! runs discovery learns what a column *is*, not what it holds.
//!
//! This module weighs the evidence ([`classify_column`]); the parts
//! gather it: `sample` (the values, read as text), `header` (the header's
//! words and what they hint), `shapes` (whether a value has a kind's
//! shape) and `names` (person names).

mod header;
mod names;
pub mod sample;
mod shapes;

use chrono::NaiveDate;
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr};

use header::{HeaderWords, Hint, header_reason};
use names::name_shape;
use sample::{ColumnSample, Sample};
use shapes::{Fit, age_years, card_checks, fit, parse_date};

/// What discovery looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Ssn,
    Phone,
    CreditCard,
    Ipv4,
    Ipv6,
    /// A column of IPv4 and IPv6 addresses both.
    Ip,
    DateOfBirth,
    PersonName,
    PostalCode,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Email,
        Kind::Ssn,
        Kind::Phone,
        Kind::CreditCard,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Ip,
        Kind::DateOfBirth,
        Kind::PersonName,
        Kind::PostalCode,
    ];

    /// The tag a proposal of this kind suggests (the demo's taxonomy:
    /// `PII.*` and `PHI.*`, so a global policy on `PII` covers them).
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Email => "PII.email",
            Kind::Ssn => "PII.ssn",
            Kind::Phone => "PII.phone",
            Kind::CreditCard => "PII.credit_card",
            Kind::Ipv4 => "PII.ip.v4",
            Kind::Ipv6 => "PII.ip.v6",
            Kind::Ip => "PII.ip",
            Kind::DateOfBirth => "PHI.dob",
            Kind::PersonName => "PII.name",
            Kind::PostalCode => "PII.postal_code",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Ssn => "ssn",
            Kind::Phone => "phone",
            Kind::CreditCard => "credit_card",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Ip => "ip_address",
            Kind::DateOfBirth => "date_of_birth",
            Kind::PersonName => "person_name",
            Kind::PostalCode => "postal_code",
        }
    }

    /// What a matching value is, in a sentence.
    fn label(self) -> &'static str {
        match self {
            Kind::Email => "well-formed e-mail addresses",
            Kind::Ssn => "US Social Security numbers (valid area, group and serial)",
            Kind::Phone => "phone numbers",
            Kind::CreditCard => {
                "13-19 digit numbers passing the Luhn check with a card-network prefix"
            }
            Kind::Ipv4 => "IPv4 addresses",
            Kind::Ipv6 => "IPv6 addresses",
            Kind::Ip => "IP addresses",
            Kind::DateOfBirth => "dates",
            Kind::PersonName => "shaped like person names",
            Kind::PostalCode => "postal codes",
        }
    }
}

/// A proposed tag for a column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub column: String,
    pub kind: Kind,
    /// 0 to 100.
    pub confidence: u8,
    /// Why, in counts and header words: never a value.
    pub evidence: String,
}

/// Findings for every column of a sample, at least `min_confidence` each,
/// at most one per column (its likeliest kind).
pub fn classify(sample: &Sample, min_confidence: u8, today: NaiveDate) -> Vec<Finding> {
    sample
        .columns
        .iter()
        .filter_map(|c| classify_column(c, today))
        .filter(|f| f.confidence >= min_confidence)
        .collect()
}

/// The column's likeliest kind, if any is likely at all.
pub fn classify_column(col: &ColumnSample, today: NaiveDate) -> Option<Finding> {
    let words = HeaderWords::new(&col.name);
    let n = col.values.len();
    if n == 0 {
        return None;
    }
    let mut best: Option<Finding> = None;
    let candidates: Vec<(Kind, u8, String)> = if col.temporal {
        date_of_birth(col, &words, today).into_iter().collect()
    } else {
        let mut out = Vec::new();
        for kind in [Kind::Email, Kind::Ssn, Kind::Phone, Kind::PostalCode] {
            out.extend(by_value_shape(kind, col, &words));
        }
        out.extend(credit_card(col, &words));
        out.extend(ip_address(col, &words));
        out.extend(date_of_birth(col, &words, today));
        out.extend(person_name(col, &words));
        out
    };
    // Without a header naming it, a kind needs variety: six colours that
    // happen to be surnames, or one version string that parses as an
    // address, are categories, not people or hosts.
    let distinct = col
        .values
        .iter()
        .map(String::as_str)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let varied = distinct >= (n / 5).clamp(1, 20);
    for (kind, confidence, reason) in candidates {
        if !varied && words.hint(kind) != Hint::Strong {
            continue;
        }
        if best.as_ref().is_none_or(|b| confidence > b.confidence) {
            best = Some(Finding {
                column: col.name.clone(),
                kind,
                confidence,
                evidence: reason,
            });
        }
    }
    best.map(|mut f| {
        // Few values are weak evidence whatever they look like.
        if n < 5 {
            f.confidence = f.confidence.min(60);
            f.evidence
                .push_str(&format!("; only {n} non-null value(s) sampled"));
        }
        f
    })
}

fn percent(part: usize, of: usize) -> u32 {
    ((part as f64 / of.max(1) as f64) * 100.0).round() as u32
}

/// Linear from `lo` at ratio `from` to `hi` at ratio 1.
fn scale(ratio: f64, from: f64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * ((ratio - from) / (1.0 - from)).clamp(0.0, 1.0)
}

/// The shared rule for kinds decided value by value.
fn by_value_shape(
    kind: Kind,
    col: &ColumnSample,
    words: &HeaderWords,
) -> Option<(Kind, u8, String)> {
    let hint = words.hint(kind);
    if hint == Hint::Against {
        return None;
    }
    let n = col.values.len();
    let (mut strong, mut weak) = (0usize, 0usize);
    for v in &col.values {
        match fit(kind, v.trim(), col.integer) {
            Fit::Strong => strong += 1,
            Fit::Weak => weak += 1,
            Fit::No => {}
        }
    }
    let rs = strong as f64 / n as f64;
    let rw = (strong + weak) as f64 / n as f64;
    let confidence = if rs >= 0.8 {
        scale(rs, 0.8, 80.0, 95.0) + if hint == Hint::Strong { 4.0 } else { 0.0 }
    } else if hint == Hint::Strong && rw >= 0.8 {
        scale(rw, 0.8, 70.0, 88.0)
    } else if hint == Hint::Strong && rw >= 0.5 {
        55.0
    } else if hint == Hint::Weak && rs >= 0.5 {
        60.0
    } else {
        return None;
    };
    let what = if weak > 0 && hint >= Hint::Weak {
        format!(
            "{}% of {n} sampled values could be {} by their digits ({}% in a format only they use)",
            percent(strong + weak, n),
            kind.label(),
            percent(strong, n)
        )
    } else {
        format!(
            "{}% of {n} sampled values are {}",
            percent(strong, n),
            kind.label()
        )
    };
    Some((
        kind,
        confidence.round().min(99.0) as u8,
        what + &header_reason(&col.name, hint),
    ))
}

/// Payment cards. A number passing both checks is a card anywhere. Under a
/// header naming cards, one check is enough: a Luhn-valid number outside
/// the networks (a private-label card), or a network's number that fails
/// the check (test data, or a digit mistyped at entry, is still someone's
/// card). `payment` may name anything about a payment: under it, only
/// numbers with a network's prefix and length count.
fn credit_card(col: &ColumnSample, words: &HeaderWords) -> Option<(Kind, u8, String)> {
    let hint = words.hint(Kind::CreditCard);
    if hint == Hint::Against {
        return None;
    }
    let n = col.values.len();
    let (mut both, mut network_only, mut luhn_only) = (0usize, 0usize, 0usize);
    for v in &col.values {
        match card_checks(v.trim()) {
            Some((true, true)) => both += 1,
            Some((false, true)) => network_only += 1,
            Some((true, false)) => luhn_only += 1,
            _ => {}
        }
    }
    let counted = match hint {
        Hint::Strong => both + network_only + luhn_only,
        Hint::Weak => both + network_only,
        Hint::None | Hint::Against => both,
    };
    let rs = both as f64 / n as f64;
    let rw = counted as f64 / n as f64;
    let confidence = if rs >= 0.8 {
        scale(rs, 0.8, 80.0, 95.0) + if hint == Hint::Strong { 4.0 } else { 0.0 }
    } else if hint == Hint::Strong && rw >= 0.8 {
        scale(rw, 0.8, 70.0, 88.0)
    } else if hint == Hint::Weak && rw >= 0.8 {
        scale(rw, 0.8, 65.0, 80.0)
    } else if hint == Hint::Strong && rw >= 0.5 {
        55.0
    } else if hint == Hint::Weak && rs >= 0.5 {
        60.0
    } else {
        return None;
    };
    let mut what = format!(
        "{}% of {n} sampled values are {}",
        percent(both, n),
        Kind::CreditCard.label()
    );
    if counted > both {
        what.push_str(&format!(
            ", {}% more have 13-19 digits and pass one of the two checks",
            percent(counted - both, n)
        ));
    }
    Some((
        Kind::CreditCard,
        confidence.round().min(99.0) as u8,
        what + &header_reason(&col.name, hint),
    ))
}

/// IP addresses: IPv4 or IPv6 by majority, since a column often holds both.
fn ip_address(col: &ColumnSample, words: &HeaderWords) -> Option<(Kind, u8, String)> {
    let hint = words.hint(Kind::Ipv4);
    if hint == Hint::Against {
        return None;
    }
    let n = col.values.len();
    let (mut v4, mut v6) = (0usize, 0usize);
    for v in &col.values {
        let v = v.trim();
        if v.parse::<Ipv4Addr>().is_ok() {
            v4 += 1;
        } else if v.contains(':') && v.parse::<Ipv6Addr>().is_ok() {
            v6 += 1;
        }
    }
    let r = (v4 + v6) as f64 / n as f64;
    let confidence = if r >= 0.8 {
        scale(r, 0.8, 80.0, 95.0) + if hint == Hint::Strong { 4.0 } else { 0.0 }
    } else if hint == Hint::Strong && r >= 0.5 {
        60.0
    } else {
        return None;
    };
    // A column of both gets the tag that covers both.
    let kind = if v6 * 10 <= v4 + v6 {
        Kind::Ipv4
    } else if v4 * 10 <= v4 + v6 {
        Kind::Ipv6
    } else {
        Kind::Ip
    };
    let what = if v4 > 0 && v6 > 0 {
        format!(
            "{}% of {n} sampled values are IPv4 addresses and {}% IPv6 addresses",
            percent(v4, n),
            percent(v6, n)
        )
    } else {
        format!(
            "{}% of {n} sampled values are {}",
            percent(v4 + v6, n),
            kind.label()
        )
    };
    Some((
        kind,
        confidence.round().min(99.0) as u8,
        what + &header_reason(&col.name, hint),
    ))
}

/// Dates of birth: dates in the past of living people. With a header
/// naming it, most values must be such dates; without one, they must look
/// like an adult population's (ages 16 to 100, spread over 30 years and
/// more), which order, visit or hire dates do not.
fn date_of_birth(
    col: &ColumnSample,
    words: &HeaderWords,
    today: NaiveDate,
) -> Option<(Kind, u8, String)> {
    let hint = words.hint(Kind::DateOfBirth);
    if hint == Hint::Against {
        return None;
    }
    let n = col.values.len();
    let ages: Vec<i32> = col
        .values
        .iter()
        .filter_map(|v| parse_date(v.trim()))
        .map(|d| age_years(d, today))
        .collect();
    if ages.is_empty() {
        return None;
    }
    let rd = ages.len() as f64 / n as f64;
    let living = ages.iter().filter(|a| (0..=120).contains(*a)).count();
    let adult = ages.iter().filter(|a| (16..=100).contains(*a)).count();
    let span = ages.iter().max().copied().unwrap_or(0) - ages.iter().min().copied().unwrap_or(0);
    let rl = living as f64 / ages.len() as f64;
    let ra = adult as f64 / ages.len() as f64;
    let confidence = if hint == Hint::Strong && rd >= 0.8 && rl >= 0.9 {
        scale(rd * rl, 0.72, 85.0, 98.0)
    } else if rd >= 0.9 && ra >= 0.97 && span >= 30 {
        scale(ra, 0.97, 62.0, 72.0)
    } else {
        return None;
    };
    Some((
        Kind::DateOfBirth,
        confidence.round() as u8,
        format!(
            "{}% of {n} sampled values are dates; {}% of those are birth dates of living people and {}% of adults (ages 16-100), spanning {span} years{}",
            percent(ages.len(), n),
            percent(living, ages.len()),
            percent(adult, ages.len()),
            header_reason(&col.name, hint)
        ),
    ))
}

/// Person names: values of one to four capitalised words of letters, and
/// how many carry a common given name or surname.
fn person_name(col: &ColumnSample, words: &HeaderWords) -> Option<(Kind, u8, String)> {
    let hint = words.hint(Kind::PersonName);
    if hint == Hint::Against {
        return None;
    }
    let n = col.values.len();
    let (mut shaped, mut known) = (0usize, 0usize);
    for v in &col.values {
        let (s, k) = name_shape(v.trim());
        shaped += usize::from(s);
        known += usize::from(s && k);
    }
    let rs = shaped as f64 / n as f64;
    let rk = known as f64 / n as f64;
    let confidence = match hint {
        Hint::Strong if rs >= 0.8 => scale(rs, 0.8, 82.0, 97.0),
        Hint::Weak if rs >= 0.8 && rk >= 0.3 => scale(rk, 0.3, 72.0, 90.0),
        // Company, city and product names share the shape; far fewer of
        // them carry a common given name or surname.
        _ if rs >= 0.8 && rk >= 0.4 => scale(rk, 0.4, 65.0, 85.0),
        _ => return None,
    };
    Some((
        Kind::PersonName,
        confidence.round() as u8,
        format!(
            "{}% of {n} sampled values are shaped like person names and {}% contain a common given name or surname{}",
            percent(shaped, n),
            percent(known, n),
            header_reason(&col.name, hint)
        ),
    ))
}

#[cfg(test)]
mod evaluation;

#[cfg(test)]
mod tests {
    use super::shapes::luhn;
    use super::*;

    fn col(name: &str, values: &[&str]) -> ColumnSample {
        ColumnSample {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            integer: false,
            temporal: false,
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    fn kind_of(c: &ColumnSample) -> Option<Kind> {
        classify_column(c, today())
            .filter(|f| f.confidence >= 50)
            .map(|f| f.kind)
    }

    #[test]
    fn distinctive_formats_need_no_header_and_bare_digits_need_one() {
        let ssns = col(
            "c1",
            &[
                "123-45-6789",
                "234-56-7890",
                "345-67-8901",
                "456-78-9012",
                "567-89-0123",
            ],
        );
        assert_eq!(kind_of(&ssns), Some(Kind::Ssn));
        let bare = [
            "123456789",
            "234567890",
            "345678901",
            "456789012",
            "567890123",
        ];
        assert_eq!(kind_of(&col("customer_id", &bare)), None);
        assert_eq!(kind_of(&col("ssn", &bare)), Some(Kind::Ssn));
        let zips = ["94105", "10001", "60601", "73301", "02139"];
        assert_eq!(kind_of(&col("quantity", &zips)), None);
        assert_eq!(kind_of(&col("zipCode", &zips)), Some(Kind::PostalCode));
    }

    #[test]
    fn headers_against_a_kind_win_over_its_shape() {
        let names = [
            "Acme Corp",
            "Globex",
            "Initech Labs",
            "Umbrella Group",
            "Hooli",
        ];
        assert_eq!(kind_of(&col("company_name", &names)), None);
        let people = [
            "Mary Smith",
            "John Garcia",
            "Wei Chen",
            "Priya Patel",
            "Zoltan Kovacs",
        ];
        assert_eq!(
            kind_of(&col("customer_name", &people)),
            Some(Kind::PersonName)
        );
        assert_eq!(kind_of(&col("x", &people)), Some(Kind::PersonName));
        assert_eq!(kind_of(&col("product_name", &people)), None);
        let mut dates = col(
            "order_date",
            &[
                "1961-02-03",
                "1975-06-07",
                "1990-01-01",
                "1950-12-12",
                "1982-03-04",
            ],
        );
        dates.temporal = true;
        assert_eq!(kind_of(&dates), None);
        dates.name = "dob".into();
        assert_eq!(kind_of(&dates), Some(Kind::DateOfBirth));
        dates.name = "d".into();
        assert_eq!(kind_of(&dates), Some(Kind::DateOfBirth));
    }

    #[test]
    fn evidence_never_echoes_a_value() {
        let values = [
            "alice@example.com",
            "bob@example.org",
            "carol@example.net",
            "dan@x.io",
            "eve@y.io",
        ];
        let f = classify_column(&col("contact", &values), today()).unwrap();
        assert_eq!(f.kind, Kind::Email);
        for v in values {
            assert!(!f.evidence.contains(v));
            assert!(!f.evidence.contains(v.split('@').next().unwrap()));
        }
    }

    fn many(name: &str, f: &dyn Fn(usize) -> String) -> ColumnSample {
        ColumnSample {
            name: name.into(),
            values: (0..60).map(f).collect(),
            integer: false,
            temporal: false,
        }
    }

    #[test]
    fn the_reviews_false_positives_are_not_proposed() {
        let colours = ["Green", "White", "Brown", "Gray", "Black", "Blue"];
        assert_eq!(kind_of(&many("color", &|i| colours[i % 6].into())), None);
        assert_eq!(
            kind_of(&many("c", &|i| colours[i % 6].to_lowercase())),
            None
        );
        let version = |i: usize| format!("1.{}.{}.{}", i % 3, i, i * 7 % 50);
        assert_eq!(kind_of(&many("assembly_version", &version)), None);
        let delta = |i: usize| format!("+{}.{:03}", 10_000 + i * 17, i);
        assert_eq!(kind_of(&many("balance_delta", &delta)), None);
        assert_eq!(kind_of(&many("x", &delta)), None);
        let founded = |i: usize| format!("{}-0{}-1{}", 1925 + i, 1 + i % 9, i % 10);
        assert_eq!(kind_of(&many("company_founded", &founded)), None);
        assert_eq!(kind_of(&many("release_date", &founded)), None);
        let sku = |i: usize| format!("M{} {}AA", 1 + i % 9, i % 10);
        assert_eq!(kind_of(&many("sku", &sku)), None);
        let tracking = |i: usize| format!("{}-{}-{:04}", 200 + i, 300 + i, i);
        assert_eq!(kind_of(&many("tracking_no", &tracking)), None);
        let part = |i: usize| format!("{}-{:02}-{:04}", 100 + i, 10 + i, 1000 + i);
        assert_eq!(kind_of(&many("part_no", &part)), None);
        let mixed = |i: usize| {
            if i.is_multiple_of(2) {
                format!("10.0.0.{i}")
            } else {
                format!("2001:db8::{i:x}")
            }
        };
        assert_eq!(kind_of(&many("client_ip", &mixed)), Some(Kind::Ip));
    }

    #[test]
    fn the_reviews_false_negatives_are_found() {
        let cases: Vec<(&str, Box<dyn Fn(usize) -> String>, Kind)> = vec![
            (
                "c",
                Box::new(|i| format!("Ann Lee <ann{i}@example.org>")),
                Kind::Email,
            ),
            (
                "c",
                Box::new(|i| format!("mailto:a{i}@example.org")),
                Kind::Email,
            ),
            (
                "c",
                Box::new(|i| format!("josé{i}@exämple.de")),
                Kind::Email,
            ),
            (
                "dob_eu",
                Box::new(|i| format!("{:02}/{:02}/{}", 13 + i % 15, 1 + i % 12, 1950 + i)),
                Kind::DateOfBirth,
            ),
            (
                "birth",
                Box::new(|i| format!("{}{:02}{:02}", 1950 + i, 1 + i % 12, 1 + i % 28)),
                Kind::DateOfBirth,
            ),
            (
                "x",
                Box::new(|i| {
                    let given = ["Jürgen", "José", "Zoë", "Ana", "Ole"][i % 5];
                    let family = ["García", "Müller", "Pérez", "Martín"][i / 5 % 4];
                    format!("{given} {family}")
                }),
                Kind::PersonName,
            ),
            (
                "user_full_name",
                Box::new(|i| format!("Zed{} Quux", char::from(b'a' + (i % 26) as u8))),
                Kind::PersonName,
            ),
            (
                "account_holder_name",
                Box::new(|i| format!("Zed{} Quux", char::from(b'a' + (i % 26) as u8))),
                Kind::PersonName,
            ),
        ];
        for (header, f, want) in cases {
            assert_eq!(kind_of(&many(header, &*f)), Some(want), "{header}");
        }
        // Non-ASCII digits match nothing, and never panic.
        assert_eq!(kind_of(&many("x", &|i| format!("١٢٣-٤٥-{i}"))), None);
        assert_eq!(kind_of(&many("ssn", &|i| format!("１２３ ４５ {i}"))), None);
        assert_eq!(
            kind_of(&many("ssn", &|i| format!("١23-45-678{}", i % 10))),
            None
        );
    }

    fn integers(name: &str, f: &dyn Fn(usize) -> String) -> ColumnSample {
        ColumnSample {
            integer: true,
            ..many(name, f)
        }
    }

    #[test]
    fn number_columns_of_the_digit_kinds_are_found_and_their_lookalikes_are_not() {
        // SSNs as an integer column: 012-34-5678 arrives as 12345678.
        let ssn = |i: usize| {
            format!(
                "{}",
                (1 + i * 7 % 665) * 1_000_000 + (1 + i % 98) * 10_000 + 1 + i
            )
        };
        assert_eq!(kind_of(&integers("social_sec_no", &ssn)), Some(Kind::Ssn));
        assert_eq!(kind_of(&integers("sec_no", &ssn)), Some(Kind::Ssn));
        assert_eq!(kind_of(&integers("id", &ssn)), None);
        assert_eq!(kind_of(&integers("c7", &ssn)), None);
        let phone = |i: usize| format!("1415555{:04}", i * 37);
        assert_eq!(kind_of(&integers("mobile_no", &phone)), Some(Kind::Phone));
        assert_eq!(kind_of(&integers("account_no", &phone)), None);
        let zip = |i: usize| format!("{}", 501 + i * 331);
        assert_eq!(kind_of(&integers("zip_cd", &zip)), Some(Kind::PostalCode));
        assert_eq!(kind_of(&integers("store_no", &zip)), None);
        let card = |i: usize| {
            let body = format!("4{:014}", 1_000_003 * (i + 1));
            (0..10)
                .map(|c| format!("{body}{c}"))
                .find(|d| luhn(d))
                .unwrap()
        };
        assert_eq!(kind_of(&integers("payment", &card)), Some(Kind::CreditCard));
        assert_eq!(kind_of(&integers("x", &card)), Some(Kind::CreditCard));
        assert_eq!(kind_of(&integers("transaction_id", &card)), None);
        // Amounts under `payment` are not cards.
        let amount = |i: usize| format!("{}", 10 + i * 37);
        assert_eq!(kind_of(&integers("payment", &amount)), None);
        // Dash- and space-grouped Visa numbers under `cc_number`, with the
        // check digit or without (as test data generators write them).
        let dashed = |i: usize| {
            let d = card(i);
            format!("{}-{}-{}-{}", &d[..4], &d[4..8], &d[8..12], &d[12..])
        };
        assert_eq!(kind_of(&many("cc_number", &dashed)), Some(Kind::CreditCard));
        assert_eq!(
            kind_of(&many("cc_number", &|i| dashed(i).replace('-', " "))),
            Some(Kind::CreditCard)
        );
        let unchecked = |i: usize| {
            format!(
                "4{:03}-{:04}-{:04}-{:04}",
                i % 1000,
                i * 7 % 10_000,
                i * 13 % 10_000,
                i * 17 % 10_000
            )
        };
        assert_eq!(
            kind_of(&many("cc_number", &unchecked)),
            Some(Kind::CreditCard)
        );
        assert_eq!(kind_of(&many("x", &unchecked)), None);
        // Under `payment`, a network's prefix and length are needed: a
        // Luhn-valid number outside the networks is no evidence there.
        assert_eq!(
            kind_of(&many("payment", &unchecked)),
            Some(Kind::CreditCard)
        );
        let private = |i: usize| {
            let body = format!("7{:014}", 1_000_003 * (i + 1));
            (0..10)
                .map(|c| format!("{body}{c}"))
                .find(|d| luhn(d))
                .unwrap()
        };
        assert_eq!(kind_of(&integers("payment", &private)), None);
        assert_eq!(kind_of(&integers("x", &private)), None);
        assert_eq!(
            kind_of(&integers("card_no", &private)),
            Some(Kind::CreditCard)
        );
    }

    #[test]
    fn few_values_are_weak_evidence() {
        let f = classify_column(&col("c", &["123-45-6789"]), today()).unwrap();
        assert!(f.confidence <= 60, "{f:?}");
        assert!(f.evidence.contains("only 1 non-null value"));
    }
}
