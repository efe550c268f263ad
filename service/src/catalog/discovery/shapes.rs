//! Whether one value has a kind's shape, checked strictly where a check
//! exists: e-mail addresses, SSNs (the SSA's rules), phone numbers, card
//! numbers (the Luhn check, a card network's prefix and length), postal
//! codes, and dates (whose ages tell birth dates).

use chrono::{Datelike, NaiveDate};
use regex::Regex;
use std::sync::LazyLock;

use super::Kind;
use super::sample::MAX_VALUE_LEN;

/// How well one value fits a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Fit {
    No,
    /// Could be (nine bare digits for an SSN): counts only with a header.
    Weak,
    Strong,
}

pub(super) fn fit(kind: Kind, v: &str, integer: bool) -> Fit {
    if v.is_empty() || v.len() > MAX_VALUE_LEN {
        return Fit::No;
    }
    match kind {
        Kind::Email => strong_if(is_email(v)),
        Kind::Ssn => ssn_fit(v, integer),
        Kind::Phone => phone_fit(v, integer),
        Kind::PostalCode => postal_fit(v, integer),
        // Decided column-wide.
        Kind::CreditCard
        | Kind::Ipv4
        | Kind::Ipv6
        | Kind::Ip
        | Kind::DateOfBirth
        | Kind::PersonName => Fit::No,
    }
}

fn strong_if(yes: bool) -> Fit {
    if yes { Fit::Strong } else { Fit::No }
}

fn is_email(v: &str) -> bool {
    // `mailto:a@b.org` and `Ann Lee <a@b.org>` hold an address too.
    let v = v
        .strip_prefix("mailto:")
        .or_else(|| v.strip_prefix("MAILTO:"))
        .unwrap_or(v);
    let v = match (v.rfind('<'), v.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => v,
    };
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 || domain.contains('@') {
        return false;
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic));
    local_ok && domain_ok
}

fn digits(v: &str) -> String {
    v.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000.
pub(super) fn ssn_valid(d: &str) -> bool {
    let (area, group, serial) = (&d[0..3], &d[3..5], &d[5..9]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn ssn_fit(v: &str, integer: bool) -> Fit {
    static DASHED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$").expect("valid regex"));
    static SPACED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[0-9]{3} [0-9]{2} [0-9]{4}$").expect("valid regex"));
    if DASHED.is_match(v) {
        return strong_if(ssn_valid(&digits(v)));
    }
    if SPACED.is_match(v) || (v.len() == 9 && v.bytes().all(|b| b.is_ascii_digit())) {
        return if ssn_valid(&digits(v)) {
            Fit::Weak
        } else {
            Fit::No
        };
    }
    // An integer column drops leading zeros.
    if integer && (7..=9).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) {
        let padded = format!("{v:0>9}");
        return if ssn_valid(&padded) {
            Fit::Weak
        } else {
            Fit::No
        };
    }
    Fit::No
}

fn phone_fit(v: &str, integer: bool) -> Fit {
    // North American layouts: (415) 555-0134, 415-555-0134, 415.555.0134,
    // 415 555 0134, 1-415-555-0134; international numbers written with a
    // leading +. An extension may follow. One separator throughout, so a
    // 3-2-4 SSN or a mixed-up identifier does not pass.
    static NANP: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        let ext = r"(?:\s*(?:x|ext\.?|extension)\s*[0-9]{1,6})?$";
        let mut out = vec![
            Regex::new(&format!(
                r"^(?:\+?1[ .-]?)?\([2-9][0-9]{{2}}\) ?[2-9][0-9]{{2}}[ .-]?[0-9]{{4}}{ext}"
            ))
            .expect("valid regex"),
        ];
        for sep in [r"-", r"\.", r" "] {
            out.push(
                Regex::new(&format!(
                    r"^(?:\+?1{sep})?[2-9][0-9]{{2}}{sep}[2-9][0-9]{{2}}{sep}[0-9]{{4}}{ext}"
                ))
                .expect("valid regex"),
            );
        }
        out
    });
    static INTERNATIONAL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\+[1-9][0-9 ().-]{6,20}[0-9]$").expect("valid regex"));
    if NANP.iter().any(|r| r.is_match(v)) {
        return Fit::Strong;
    }
    // One dot is a decimal point (+12345.678), not a separator.
    if INTERNATIONAL.is_match(v) && v.matches('.').count() != 1 {
        let n = digits(v).len();
        return strong_if((8..=15).contains(&n));
    }
    // Ten bare digits (or eleven starting with 1) look like a North American
    // number, and like many an account number.
    let d = digits(v);
    if (integer || d.len() == v.len()) && (d.len() == 10 || (d.len() == 11 && d.starts_with('1'))) {
        let d = &d.as_bytes()[d.len() - 10..];
        let ok = (b'2'..=b'9').contains(&d[0]) && (b'2'..=b'9').contains(&d[3]);
        return if ok { Fit::Weak } else { Fit::No };
    }
    Fit::No
}

pub(super) fn luhn(d: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in d.bytes().rev().enumerate() {
        let mut x = u32::from(b - b'0');
        if i % 2 == 1 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    sum.is_multiple_of(10)
}

/// A prefix a card network issues under, with its lengths: Visa,
/// Mastercard, American Express, Discover, JCB, Diners Club, UnionPay,
/// Maestro, Mir. Numbers starting 0, 1 (but JCB's 1800), 7, 8 or 9 are no
/// network's.
fn card_network(d: &str) -> bool {
    let p = |n: usize| d[..n].parse::<u32>().unwrap_or(0);
    let len = d.len();
    (d.starts_with('4') && matches!(len, 13 | 16 | 19))
        || (((51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4))) && len == 16)
        || ((p(2) == 34 || p(2) == 37) && len == 15)
        || ((p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3))) && (16..=19).contains(&len))
        || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&len))
        || ((p(4) == 2131 || p(4) == 1800) && len == 15)
        || ((p(2) == 36 || p(2) == 38 || (300..=305).contains(&p(3))) && (14..=19).contains(&len))
        || (p(2) == 62 && (16..=19).contains(&len))
        || ((matches!(p(4), 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761..=6763))
            && (13..=19).contains(&len))
        || ((2200..=2204).contains(&p(4)) && (16..=19).contains(&len))
}

/// The two checks a card number passes, (Luhn, a network's prefix and
/// length), if it is 13-19 digits, bare or in groups split by single
/// spaces or dashes.
pub(super) fn card_checks(v: &str) -> Option<(bool, bool)> {
    static GROUPED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:[0-9]{13,19}|[0-9]{2,6}(?:[ -][0-9]{2,6}){1,5})$").expect("valid regex")
    });
    if v.len() > MAX_VALUE_LEN || !GROUPED.is_match(v) {
        return None;
    }
    let d = digits(v);
    (13..=19)
        .contains(&d.len())
        .then(|| (luhn(&d), card_network(&d)))
}

#[cfg(test)]
fn card_fit(v: &str) -> Fit {
    match card_checks(v) {
        Some((true, true)) => Fit::Strong,
        Some((true, false) | (false, true)) => Fit::Weak,
        _ => Fit::No,
    }
}

fn postal_fit(v: &str, integer: bool) -> Fit {
    static ZIP4: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[0-9]{5}-[0-9]{4}$").expect("valid regex"));
    static UK: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?i)[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][ABD-HJLNP-UW-Z]{2}$")
            .expect("valid regex")
    });
    static CANADA: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?i)[ABCEGHJ-NPRSTVXY][0-9][ABCEGHJ-NPRSTV-Z] ?[0-9][ABCEGHJ-NPRSTV-Z][0-9]$")
            .expect("valid regex")
    });
    if ZIP4.is_match(v) || UK.is_match(v) || CANADA.is_match(v) {
        return Fit::Strong;
    }
    let all_digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    // Five digits (US, DE, FR...), four (AT, CH, AU...), or an integer
    // column that dropped a ZIP's leading zeros.
    if all_digits && (v.len() == 5 || v.len() == 4 || (integer && v.len() == 3)) {
        return Fit::Weak;
    }
    Fit::No
}

pub(super) fn parse_date(v: &str) -> Option<NaiveDate> {
    // ISO dates (a time may follow), and the common written layouts.
    let head = v.get(..10).unwrap_or(v);
    if let Ok(d) = NaiveDate::parse_from_str(head, "%Y-%m-%d") {
        let rest = &v[head.len()..];
        if rest.is_empty() || rest.starts_with('T') || rest.starts_with(' ') {
            return Some(d);
        }
        return None;
    }
    if v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDate::parse_from_str(v, "%Y%m%d").ok();
    }
    // 03/04/1980 is March 4th or April 3rd: either way a date in that
    // person's year, which is what the age test needs.
    [
        "%m/%d/%Y",
        "%d/%m/%Y",
        "%d.%m.%Y",
        "%Y/%m/%d",
        "%d-%b-%Y",
        "%b %d, %Y",
        "%d %b %Y",
    ]
    .iter()
    .find_map(|f| NaiveDate::parse_from_str(v, f).ok())
}

pub(super) fn age_years(born: NaiveDate, today: NaiveDate) -> i32 {
    let mut age = today.year() - born.year();
    if (today.month(), today.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_strictly() {
        assert!(is_email("a.b+c@example.co.uk"));
        for bad in [
            "a@b",
            "@x.com",
            "a@@x.com",
            "a..b@x.com",
            "a@x.c0m",
            "a b@x.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert_eq!(ssn_fit("123-45-6789", false), Fit::Strong);
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert_eq!(ssn_fit(bad, false), Fit::No, "{bad}");
        }
        assert_eq!(ssn_fit("123456789", false), Fit::Weak);
        assert_eq!(ssn_fit("23456789", true), Fit::Weak);
        assert_eq!(card_fit("4111 1111 1111 1111"), Fit::Strong);
        assert_eq!(card_fit("4111-1111-1111-1111"), Fit::Strong);
        assert_eq!(card_fit("4111-1111-1111-1112"), Fit::Weak);
        assert_eq!(card_fit("7111-1111-1111-1112"), Fit::No);
        assert_eq!(card_fit("378282246310005"), Fit::Strong);
        for good in [
            "(415) 555-0134",
            "415-555-0134",
            "415.555.0134",
            "+1 415 555 0134",
            "1-415-555-0134",
            "+44 20 7946 0958",
            "415-555-0134 x12",
        ] {
            assert_eq!(phone_fit(good, false), Fit::Strong, "{good}");
        }
        assert_eq!(phone_fit("4155550134", false), Fit::Weak);
        assert_eq!(phone_fit("123-45-6789", false), Fit::No);
        assert_eq!(phone_fit("415-555 0134", false), Fit::No);
        assert_eq!(postal_fit("94105-1234", false), Fit::Strong);
        assert_eq!(postal_fit("SW1A 1AA", false), Fit::Strong);
        assert_eq!(postal_fit("K1A 0B1", false), Fit::Strong);
        assert_eq!(postal_fit("94105", false), Fit::Weak);
        assert_eq!(postal_fit("941", true), Fit::Weak);
    }
}
