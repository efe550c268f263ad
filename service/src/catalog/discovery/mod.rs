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

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use futures::StreamExt;
use regex::Regex;
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock};

use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;

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

/// One column's sampled values, rendered as text (dates as ISO dates).
#[derive(Debug, Clone)]
pub struct ColumnSample {
    pub name: String,
    /// The non-null values (nulls and placeholders are left out).
    pub values: Vec<String>,
    /// The column holds numbers (integers, or whole decimals and floats
    /// rendered as integers), which lose leading zeros: an SSN `012-34-5678`
    /// arrives as `12345678` and a ZIP `02139` as `2139`.
    pub integer: bool,
    /// The column is a date or timestamp column.
    pub temporal: bool,
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

/// What a discovery run saw.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rows: usize,
    pub columns: Vec<ColumnSample>,
    /// Every column not examined, and why (its type holds none of the
    /// kinds or isn't read, the sample holds no value of it, or its floats
    /// are too large to hold every digit). Examined columns are in
    /// `columns`: no column goes unmentioned.
    pub skipped: Vec<(String, String)>,
    /// Why the sample is smaller than asked, if it is.
    pub note: Option<String>,
}

/// Longest value examined; longer ones match nothing.
const MAX_VALUE_LEN: usize = 256;

/// Text a sample may hold in all: sampling stops there (wide or long-text
/// datasets), so a discovery run's memory is bounded whatever the rows.
const MAX_SAMPLE_BYTES: usize = 32 << 20;

/// Read up to `rows` rows of the dataset's source (no policies: discovery
/// is for its owners and governors, and returns no values) and render each
/// examinable column's values as text.
pub async fn sample_dataset(
    d: &DatasetRecord,
    rows: usize,
    stores: &crate::catalog::object_stores::ObjectStores,
) -> Result<Sample> {
    use datafusion::prelude::SessionContext;
    match crate::model::source_kind::SourceKind::of(d) {
        crate::model::source_kind::SourceKind::Files(_) => {}
        crate::model::source_kind::SourceKind::AuditTrail => {
            return Err(VeilError::FailedPrecondition(format!(
                "{} is Veil's audit trail: its dictionary is built in, there is nothing to discover",
                d.name
            )));
        }
    }
    // DataFusion's messages quote the values they fail on: neither the
    // answer nor the log carries them, only their class.
    let fail = |e: datafusion::error::DataFusionError| {
        tracing::warn!(dataset = %d.name, error = %crate::redact::describe(&e), "discovery could not sample the dataset");
        VeilError::FailedPrecondition(format!(
            "discovery could not read {}'s files as its dictionary describes them (a value that doesn't parse as its column's type, or an unreadable file); the details are in the Veil server log",
            d.name
        ))
    };
    let source = crate::catalog::source_table::SourceTable::open(d, None, stores).await?;
    let ctx = SessionContext::new();
    let mut stream = ctx
        .read_table(Arc::new(source))
        .and_then(|t| t.limit(0, Some(rows)))
        .map_err(fail)?
        .execute_stream()
        .await
        .map_err(fail)?;
    let mut sample = Sample::default();
    let mut bytes = 0usize;
    // Per examined column: where it is in the batch, how it is read, its
    // type, and how many float values were too large to hold every digit.
    let mut examined: Option<Vec<(usize, Reading, DataType, usize)>> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(fail)?;
        let schema = batch.schema();
        let plan = examined.get_or_insert_with(|| {
            let mut plan = Vec::new();
            for (i, f) in schema.fields().iter().enumerate() {
                let dt = f.data_type();
                match reading(dt) {
                    Ok(how) => {
                        plan.push((i, how, dt.clone(), 0));
                        sample.columns.push(ColumnSample {
                            name: f.name().clone(),
                            values: Vec::new(),
                            integer: matches!(
                                how,
                                Reading::Integer | Reading::Decimal | Reading::Float { .. }
                            ),
                            temporal: how == Reading::Temporal,
                        });
                    }
                    Err(why) => sample.skipped.push((f.name().clone(), why)),
                }
            }
            plan
        });
        sample.rows += batch.num_rows();
        let unrenderable = |e: datafusion::arrow::error::ArrowError| {
            tracing::warn!(dataset = %d.name, error = %crate::redact::class_of(&e.to_string()), "discovery could not render a column as text");
            VeilError::FailedPrecondition(format!(
                "discovery could not render a column of {} as text; the details are in the Veil server log",
                d.name
            ))
        };
        for (slot, (i, how, _, inexact)) in plan.iter_mut().enumerate() {
            let values = &mut sample.columns[slot].values;
            if let Reading::Float { exact } = *how {
                let floats = cast(batch.column(*i), &DataType::Float64).map_err(unrenderable)?;
                for v in floats.as_primitive::<Float64Type>().iter() {
                    match v.map(|x| whole_float(x, exact)) {
                        None => {}
                        Some(Whole::Exact(n)) => keep(values, &mut bytes, &n.to_string()),
                        Some(Whole::TooLarge) => {
                            *inexact += 1;
                            values.push(NO_MATCH);
                        }
                        Some(Whole::Fraction) => values.push(NO_MATCH),
                    }
                }
                continue;
            }
            let text = cast(batch.column(*i), &DataType::Utf8).map_err(unrenderable)?;
            for v in text.as_string::<i32>().iter().flatten() {
                match *how {
                    Reading::Decimal => match whole_decimal(v) {
                        Some(whole) => keep(values, &mut bytes, whole),
                        None => values.push(NO_MATCH),
                    },
                    _ => keep(values, &mut bytes, v),
                }
            }
        }
        if bytes > MAX_SAMPLE_BYTES {
            sample.note = Some(format!(
                "sampling stopped after {} rows: the sample reached {} MB of text",
                sample.rows,
                MAX_SAMPLE_BYTES >> 20
            ));
            break;
        }
    }
    if examined.is_none() {
        sample.skipped = d
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    "the dataset has no rows to sample".to_string(),
                )
            })
            .collect();
    }
    // A column with nothing but nulls says nothing; a float column of
    // numbers too large to hold every digit can't be checked.
    let plan = examined.unwrap_or_default();
    let columns = std::mem::take(&mut sample.columns);
    for (c, (_, _, dt, inexact)) in columns.into_iter().zip(plan) {
        if c.values.is_empty() {
            sample.skipped.push((
                c.name,
                "no values in the sample (all null or placeholders like N/A)".into(),
            ));
        } else if inexact * 2 > c.values.len() {
            sample.skipped.push((
                c.name,
                format!(
                    "{dt} column: most values are whole numbers of 2^53 or more, where a float no longer holds every digit (a card number kept as a float has lost its check digit); store such numbers as integers or text to have them examined"
                ),
            ));
        } else {
            sample.columns.push(c);
        }
    }
    Ok(sample)
}

/// A value that is there but matches no kind (too long, a fraction): kept,
/// unlike a null, so it counts against every kind.
const NO_MATCH: String = String::new();

/// Add one rendered value to a column's sample.
fn keep(values: &mut Vec<String>, bytes: &mut usize, v: &str) {
    if is_placeholder(v) {
        return;
    }
    if v.len() > MAX_VALUE_LEN {
        values.push(NO_MATCH);
        return;
    }
    *bytes += v.len();
    values.push(v.to_string());
}

/// How a column's values are read for examination.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    Text,
    /// Integers of any width, signed or not: their digits, leading zeros lost.
    Integer,
    /// Decimals: whole values as integers; a fraction matches no kind.
    Decimal,
    /// Floats: whole values under `exact` (below which the type holds every
    /// integer) as integers; a fraction matches no kind.
    Float {
        exact: f64,
    },
    /// Dates and timestamps, as ISO dates.
    Temporal,
}

/// How a column of this type is read, or why it is not examined (the
/// reason is reported in `skipped`, so no column goes unmentioned).
fn reading(dt: &DataType) -> std::result::Result<Reading, String> {
    Ok(match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Reading::Text,
        t if t.is_integer() => Reading::Integer,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Reading::Decimal,
        DataType::Float16 => Reading::Float {
            exact: 2f64.powi(11),
        },
        DataType::Float32 => Reading::Float {
            exact: 2f64.powi(24),
        },
        DataType::Float64 => Reading::Float {
            exact: 2f64.powi(53),
        },
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Reading::Temporal,
        // Dictionary-encoded values are read as their value type.
        DataType::Dictionary(_, v) => {
            return reading(v).map_err(|why| format!("dictionary-encoded {why}"));
        }
        DataType::Boolean => {
            return Err("Boolean column: true and false hold none of the kinds".into());
        }
        DataType::Null => return Err("Null column: it holds no values (all null)".into()),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            return Err(format!(
                "{dt} column: binary values are not read; tag it by hand if it holds personal data"
            ));
        }
        DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Interval(_) => {
            return Err(format!(
                "{dt} column: times of day and durations hold none of the kinds"
            ));
        }
        t if t.is_nested() => {
            return Err(format!(
                "{dt} column: nested values are not read; tag it by hand if its fields hold personal data"
            ));
        }
        _ => {
            return Err(format!(
                "{dt} column: discovery reads text, number and date columns"
            ));
        }
    })
}

/// A float value as discovery sees it.
#[derive(Debug, PartialEq)]
enum Whole {
    Exact(i64),
    /// Whole, but at or past the point where the type skips integers: its
    /// last digits may be lost, so no digit check is sound.
    TooLarge,
    /// A fraction, an infinity or NaN.
    Fraction,
}

fn whole_float(x: f64, exact: f64) -> Whole {
    if !x.is_finite() || x.fract() != 0.0 {
        Whole::Fraction
    } else if x.abs() >= exact {
        Whole::TooLarge
    } else {
        // In range: below 2^53 the cast is exact.
        Whole::Exact(x as i64)
    }
}

/// A decimal's text (`123456789.00`) as a whole number (`123456789`), or
/// `None` if it has a fraction.
fn whole_decimal(v: &str) -> Option<&str> {
    match v.split_once('.') {
        None => Some(v),
        Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => Some(whole),
        Some(_) => None,
    }
}

/// Text meaning "no value": counted as a null, not as a value that fails
/// to look like anything.
fn is_placeholder(v: &str) -> bool {
    const PLACEHOLDERS: &[&str] = &[
        "",
        "-",
        "--",
        "?",
        "n/a",
        "na",
        "none",
        "null",
        "nil",
        "unknown",
        "tbd",
        "redacted",
        "not available",
        "not provided",
        "missing",
        "#n/a",
    ];
    let t = v.trim();
    t.len() <= 13 && PLACEHOLDERS.iter().any(|p| t.eq_ignore_ascii_case(p))
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

/// How the header bears on a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hint {
    /// The header names something else (`product_name`, `order_date`).
    Against,
    None,
    /// Ambiguous (`name`).
    Weak,
    /// The header names the kind (`email`, `ssn`, `date_of_birth`).
    Strong,
}

/// A header split into lower-case words (`dateOfBirth`, `date_of_birth`,
/// `DATE-OF-BIRTH` all give `date of birth`), and the words run together.
#[derive(Debug)]
struct HeaderWords {
    words: Vec<String>,
    joined: String,
}

impl HeaderWords {
    fn new(header: &str) -> Self {
        let mut words = Vec::new();
        let mut cur = String::new();
        let chars: Vec<char> = header.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if !c.is_alphanumeric() {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                continue;
            }
            // camelCase boundary: a lower-case letter or digit, then upper.
            let boundary = c.is_uppercase()
                && i > 0
                && (chars[i - 1].is_lowercase()
                    || (chars[i - 1].is_uppercase()
                        && chars.get(i + 1).is_some_and(|n| n.is_lowercase())));
            if boundary && !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            cur.extend(c.to_lowercase());
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        let joined = words.concat();
        Self { words, joined }
    }

    /// A word is one of `any`, as written or without trailing digits
    /// (`phone2`, `zip5`, `email_1`'s `email`).
    fn has(&self, any: &[&str]) -> bool {
        self.words.iter().any(|w| {
            let stem = w.trim_end_matches(|c: char| c.is_ascii_digit());
            any.contains(&w.as_str()) || (!stem.is_empty() && any.contains(&stem))
        })
    }

    /// Word `a` directly followed by one of `then` (`sec no`, `soc sec`).
    fn has_pair(&self, a: &[&str], then: &[&str]) -> bool {
        self.words
            .windows(2)
            .any(|w| a.contains(&w[0].as_str()) && then.contains(&w[1].as_str()))
    }

    fn joined_has(&self, any: &[&str]) -> bool {
        any.iter().any(|p| self.joined.contains(p))
    }

    /// Words naming an identifier, a code or a quantity: they count against
    /// every kind unless the header also names the kind (`order_email`).
    fn names_something_else(&self) -> bool {
        self.has(&[
            "sku", "part", "partno", "item", "model", "serial", "tracking", "product", "version",
            "ver", "build", "release", "assembly", "invoice", "ticket", "order", "batch", "lot",
            "isbn", "upc", "ean", "gtin", "hash", "checksum", "uuid", "guid", "amount", "balance",
            "delta", "price", "total", "sum", "qty", "quantity", "count", "score", "rate", "oid",
        ])
    }

    /// Words naming an identifier or a reference number: they count
    /// against the kinds written as bare digits (SSN, phone, card, postal
    /// code), which so many identifiers look like, unless the header also
    /// names the kind (`card_id`). E-mail addresses often serve as user ids.
    fn names_an_identifier(&self) -> bool {
        self.has(&[
            "id",
            "ids",
            "uid",
            "identifier",
            "key",
            "pk",
            "fk",
            "account",
            "acct",
            "transaction",
            "txn",
            "confirmation",
            "routing",
            "iban",
            "shipment",
            "parcel",
            "waybill",
            "awb",
            "consignment",
            "imei",
            "iccid",
            "meid",
            "barcode",
            "policy",
            "claim",
            "loyalty",
            "member",
            "membership",
        ])
    }

    fn hint(&self, kind: Kind) -> Hint {
        let hint = self.hint_words(kind);
        let digit_kind = matches!(
            kind,
            Kind::Ssn | Kind::Phone | Kind::CreditCard | Kind::PostalCode
        );
        // An identifier word yields to a header that hints at the kind at
        // all (`tax_id` may well hold SSNs; `payment_id` still needs card
        // numbers with a network's prefix).
        if (hint < Hint::Strong && self.names_something_else())
            || (hint == Hint::None && digit_kind && self.names_an_identifier())
        {
            return Hint::Against;
        }
        hint
    }

    fn hint_words(&self, kind: Kind) -> Hint {
        let strong = |yes: bool| if yes { Hint::Strong } else { Hint::None };
        match kind {
            Kind::Email => strong(
                self.has(&["email", "mail", "emails", "mailto", "emailaddr", "mailaddr"])
                    || self.joined_has(&["email", "mailaddress"]),
            ),
            Kind::Ssn => {
                // `ssn`, `social_security_number`, and the abbreviations
                // exports use: `soc_sec`, `social_sec_no`, `sec_no`, `ss_no`.
                if self.has(&["ssn", "ssns", "socsec", "ssno", "ssnum", "ssnbr"])
                    || self.joined_has(&["socialsecurity", "socialsec", "socsec", "ssnumber"])
                    || self.has_pair(&["social", "soc"], &["sec", "security", "secur"])
                    || self.has_pair(&["sec", "ss"], &["no", "num", "nbr", "nr", "number"])
                {
                    Hint::Strong
                } else if self.has(&["tin", "taxid", "itin"])
                    || self.has_pair(&["tax", "national"], &["id", "no", "num", "number"])
                {
                    Hint::Weak
                } else {
                    Hint::None
                }
            }
            Kind::Phone => strong(
                self.has(&[
                    "phone",
                    "phones",
                    "tel",
                    "telno",
                    "telnum",
                    "telephone",
                    "mobile",
                    "mobileno",
                    "mob",
                    "mobno",
                    "cell",
                    "cellno",
                    "cellphone",
                    "fax",
                    "msisdn",
                ]) || self.joined_has(&["phone"]),
            ),
            Kind::CreditCard => {
                if self.has(&["pan", "cc", "ccn", "ccno", "card", "cards"])
                    || self.joined_has(&[
                        "creditcard",
                        "cardnumber",
                        "cardno",
                        "cardnum",
                        "ccnum",
                        "debitcard",
                    ])
                {
                    Hint::Strong
                } else if self.has(&["payment", "payments", "pmt"]) {
                    // A payment column may hold card numbers, or anything
                    // else about a payment: only card-valid values count.
                    Hint::Weak
                } else {
                    Hint::None
                }
            }
            Kind::Ipv4 | Kind::Ipv6 | Kind::Ip => {
                if self.has(&["ip", "ipv4", "ipv6", "ipaddr", "ipaddress", "ips"])
                    || self.joined_has(&["ipaddr", "ipaddress"])
                {
                    Hint::Strong
                } else if self.has(&["addr", "host", "remote"]) {
                    Hint::Weak
                } else {
                    Hint::None
                }
            }
            Kind::DateOfBirth => {
                if self.has(&[
                    "dob",
                    "birth",
                    "birthdate",
                    "birthday",
                    "born",
                    "birthdt",
                    "bday",
                    "bdate",
                ]) || self.joined_has(&["dateofbirth", "birthdate", "birthday", "bday"])
                {
                    Hint::Strong
                } else if self.has(&[
                    "release",
                    "released",
                    "founded",
                    "built",
                    "published",
                    "established",
                    "incorporated",
                    "launch",
                    "launched",
                    "manufactured",
                    "registered",
                    "issued",
                    "effective",
                    "since",
                    "purchase",
                    "purchased",
                    "renewal",
                    "valid",
                    "created",
                    "updated",
                    "modified",
                    "order",
                    "ordered",
                    "ship",
                    "shipped",
                    "hire",
                    "hired",
                    "start",
                    "end",
                    "expires",
                    "expiry",
                    "expiration",
                    "event",
                    "visit",
                    "admission",
                    "admitted",
                    "discharge",
                    "discharged",
                    "due",
                    "paid",
                    "login",
                    "seen",
                    "last",
                    "first",
                    "signup",
                    "joined",
                    "closed",
                    "opened",
                    "enrolled",
                    "enrollment",
                    "timestamp",
                    "ts",
                ]) {
                    Hint::Against
                } else {
                    Hint::None
                }
            }
            Kind::PersonName => {
                const AGAINST: &[&str] = &[
                    "file",
                    "filename",
                    "product",
                    "company",
                    "host",
                    "hostname",
                    "table",
                    "column",
                    "city",
                    "street",
                    "brand",
                    "item",
                    "business",
                    "org",
                    "organization",
                    "organisation",
                    "domain",
                    "app",
                    "device",
                    "server",
                    "bank",
                    "user",
                    "username",
                    "account",
                    "event",
                    "project",
                    "dataset",
                    "schema",
                    "job",
                    "country",
                    "state",
                    "category",
                    "drug",
                    "diagnosis",
                    "site",
                    "store",
                    "team",
                    "department",
                    "dept",
                    "class",
                    "type",
                    "model",
                    "vendor",
                    "merchant",
                    "employer",
                    "school",
                    "hospital",
                    "clinic",
                    "plan",
                    "campaign",
                    "region",
                    "county",
                    "screen",
                    "display",
                    "login",
                    "tag",
                    "label",
                    "sku",
                    "course",
                ];
                if self.has(&[
                    "surname",
                    "forename",
                    "firstname",
                    "lastname",
                    "fullname",
                    "givenname",
                    "familyname",
                    "middlename",
                    "maidenname",
                    "fname",
                    "lname",
                ]) || (self.has(&["name", "names"])
                    && self.has(&[
                        "first",
                        "last",
                        "full",
                        "given",
                        "family",
                        "middle",
                        "maiden",
                        "customer",
                        "patient",
                        "person",
                        "participant",
                        "employee",
                        "contact",
                        "member",
                        "client",
                        "subscriber",
                        "student",
                        "guardian",
                        "applicant",
                        "holder",
                        "cardholder",
                        "beneficiary",
                        "legal",
                        "birth",
                    ]))
                {
                    Hint::Strong
                } else if self.has(AGAINST) {
                    Hint::Against
                } else if self.has(&["name", "names"]) {
                    Hint::Weak
                } else {
                    Hint::None
                }
            }
            Kind::PostalCode => strong(
                self.has(&[
                    "zip",
                    "zipcode",
                    "postal",
                    "postcode",
                    "postalcode",
                    "plz",
                    "zip5",
                    "zipcd",
                    "postcd",
                ]) || self.joined_has(&["zipcode", "postalcode", "postcode"]),
            ),
        }
    }
}

/// How well one value fits a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fit {
    No,
    /// Could be (nine bare digits for an SSN): counts only with a header.
    Weak,
    Strong,
}

fn percent(part: usize, of: usize) -> u32 {
    ((part as f64 / of.max(1) as f64) * 100.0).round() as u32
}

/// Linear from `lo` at ratio `from` to `hi` at ratio 1.
fn scale(ratio: f64, from: f64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * ((ratio - from) / (1.0 - from)).clamp(0.0, 1.0)
}

fn header_reason(header: &str, hint: Hint) -> String {
    match hint {
        Hint::Strong => format!("; the header '{header}' names it"),
        Hint::Weak => format!("; the header '{header}' is consistent with it"),
        Hint::None | Hint::Against => "; the header says nothing".into(),
    }
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

fn fit(kind: Kind, v: &str, integer: bool) -> Fit {
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
fn ssn_valid(d: &str) -> bool {
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
        let d = d[d.len() - 10..].as_bytes();
        let ok = (b'2'..=b'9').contains(&d[0]) && (b'2'..=b'9').contains(&d[3]);
        return if ok { Fit::Weak } else { Fit::No };
    }
    Fit::No
}

fn luhn(d: &str) -> bool {
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
fn card_checks(v: &str) -> Option<(bool, bool)> {
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

fn parse_date(v: &str) -> Option<NaiveDate> {
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

fn age_years(born: NaiveDate, today: NaiveDate) -> i32 {
    let mut age = today.year() - born.year();
    if (today.month(), today.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    age
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

/// (shaped like a name, contains a known given name or surname)
fn name_shape(v: &str) -> (bool, bool) {
    let parts: Vec<&str> = v
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() || parts.len() > 4 || v.len() > 80 {
        return (false, false);
    }
    // Capitalised words ("Mary Smith", "MARY SMITH"), or a value all in
    // lower case ("mary smith") as some systems keep names.
    let lower = v.chars().all(|c| !c.is_uppercase());
    let shaped = parts.iter().all(|p| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_alphabetic() && (c.is_uppercase() || lower))
            && p.chars().all(|c| c.is_alphabetic() || "'-.".contains(c))
    });
    // All capitals of one or two letters (state codes, initials alone) is
    // not a name.
    let shaped = shaped && !(parts.len() == 1 && parts[0].len() <= 3);
    let known = parts.iter().any(|p| {
        let p = fold_accents(&p.trim_matches(|c: char| !c.is_alphabetic()).to_lowercase());
        GIVEN_NAMES.binary_search(&p.as_str()).is_ok()
            || SURNAMES.binary_search(&p.as_str()).is_ok()
    });
    (shaped, known)
}

/// `garcía` → `garcia`, `müller` → `muller`: the name lists are unaccented.
fn fold_accents(word: &str) -> String {
    word.chars()
        .map(|c| match c {
            'á' | 'à' | 'ä' | 'â' | 'ã' | 'å' | 'ā' => 'a',
            'é' | 'è' | 'ë' | 'ê' | 'ē' | 'ę' => 'e',
            'í' | 'ì' | 'ï' | 'î' | 'ī' => 'i',
            'ó' | 'ò' | 'ö' | 'ô' | 'õ' | 'ø' | 'ō' => 'o',
            'ú' | 'ù' | 'ü' | 'û' | 'ū' => 'u',
            'ñ' | 'ń' => 'n',
            'ç' | 'ć' | 'č' => 'c',
            'ś' | 'š' => 's',
            'ž' | 'ź' | 'ż' => 'z',
            'ł' => 'l',
            'ý' | 'ÿ' => 'y',
            other => other,
        })
        .collect()
}

/// Common given names (sorted, lower case): US census and international.
const GIVEN_NAMES: &[&str] = &[
    "aaron",
    "adam",
    "ahmed",
    "aisha",
    "alan",
    "albert",
    "alejandro",
    "alex",
    "alexander",
    "alice",
    "alicia",
    "amanda",
    "amy",
    "ana",
    "andrea",
    "andrew",
    "angela",
    "ann",
    "anna",
    "anne",
    "anthony",
    "antonio",
    "arthur",
    "ashley",
    "barbara",
    "ben",
    "benjamin",
    "beth",
    "betty",
    "bill",
    "bob",
    "brandon",
    "brenda",
    "brian",
    "bruce",
    "carl",
    "carlos",
    "carol",
    "carolyn",
    "catherine",
    "charles",
    "cheryl",
    "chloe",
    "chris",
    "christina",
    "christine",
    "christopher",
    "cynthia",
    "daniel",
    "david",
    "deborah",
    "debra",
    "dennis",
    "diana",
    "diane",
    "donald",
    "donna",
    "dorothy",
    "douglas",
    "dylan",
    "edward",
    "elena",
    "elizabeth",
    "emily",
    "emma",
    "eric",
    "ethan",
    "evelyn",
    "fatima",
    "frances",
    "frank",
    "gary",
    "george",
    "gloria",
    "grace",
    "gregory",
    "hannah",
    "harold",
    "heather",
    "helen",
    "henry",
    "hiro",
    "ian",
    "isabella",
    "jack",
    "jacob",
    "james",
    "jamie",
    "jan",
    "janet",
    "janice",
    "jason",
    "jean",
    "jeffrey",
    "jennifer",
    "jeremy",
    "jerry",
    "jessica",
    "joan",
    "joe",
    "john",
    "jonathan",
    "jose",
    "joseph",
    "joshua",
    "joyce",
    "juan",
    "judith",
    "judy",
    "julia",
    "julie",
    "justin",
    "karen",
    "katherine",
    "kathleen",
    "kathryn",
    "kelly",
    "kenneth",
    "kevin",
    "kim",
    "kimberly",
    "kyle",
    "larry",
    "laura",
    "lauren",
    "lawrence",
    "li",
    "liam",
    "linda",
    "lisa",
    "lucas",
    "lucy",
    "luis",
    "margaret",
    "maria",
    "marie",
    "mark",
    "martha",
    "mary",
    "matthew",
    "megan",
    "melissa",
    "mia",
    "michael",
    "michelle",
    "mohammed",
    "nancy",
    "nathan",
    "nicholas",
    "nicole",
    "noah",
    "olivia",
    "pamela",
    "patricia",
    "patrick",
    "paul",
    "peter",
    "priya",
    "rachel",
    "ralph",
    "raymond",
    "rebecca",
    "richard",
    "robert",
    "roger",
    "ronald",
    "rose",
    "ruth",
    "ryan",
    "samantha",
    "samuel",
    "sandra",
    "sara",
    "sarah",
    "scott",
    "sean",
    "sharon",
    "shirley",
    "sophia",
    "stephanie",
    "stephen",
    "steven",
    "susan",
    "teresa",
    "terry",
    "thomas",
    "timothy",
    "tyler",
    "victoria",
    "virginia",
    "walter",
    "wei",
    "william",
    "yuki",
    "zachary",
];

/// Common surnames (sorted, lower case): US census and international.
const SURNAMES: &[&str] = &[
    "adams",
    "ahmed",
    "ali",
    "allen",
    "alvarez",
    "anderson",
    "bailey",
    "baker",
    "barnes",
    "bell",
    "bennett",
    "brooks",
    "brown",
    "butler",
    "campbell",
    "carter",
    "castillo",
    "chavez",
    "chen",
    "clark",
    "collins",
    "cook",
    "cooper",
    "cox",
    "cruz",
    "davis",
    "diaz",
    "edwards",
    "evans",
    "fischer",
    "flores",
    "foster",
    "garcia",
    "gomez",
    "gonzalez",
    "gray",
    "green",
    "gutierrez",
    "hall",
    "harris",
    "hernandez",
    "hill",
    "howard",
    "hughes",
    "jackson",
    "james",
    "jenkins",
    "johnson",
    "jones",
    "kelly",
    "khan",
    "kim",
    "king",
    "kumar",
    "lee",
    "lewis",
    "li",
    "lopez",
    "martin",
    "martinez",
    "miller",
    "mitchell",
    "moore",
    "morales",
    "morgan",
    "morris",
    "muller",
    "murphy",
    "myers",
    "nelson",
    "nguyen",
    "ortiz",
    "parker",
    "patel",
    "perez",
    "perry",
    "peterson",
    "phillips",
    "powell",
    "price",
    "ramirez",
    "reed",
    "reyes",
    "richardson",
    "rivera",
    "roberts",
    "robinson",
    "rodriguez",
    "rogers",
    "ross",
    "rossi",
    "russell",
    "sanchez",
    "sanders",
    "schmidt",
    "scott",
    "silva",
    "singh",
    "smith",
    "stewart",
    "sullivan",
    "taylor",
    "thomas",
    "thompson",
    "torres",
    "turner",
    "walker",
    "wang",
    "ward",
    "watson",
    "white",
    "williams",
    "wilson",
    "wood",
    "wright",
    "wu",
    "yang",
    "young",
    "zhang",
];

#[cfg(test)]
mod evaluation;

#[cfg(test)]
mod tests {
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
    fn name_lists_are_sorted_for_binary_search() {
        assert!(GIVEN_NAMES.windows(2).all(|w| w[0] < w[1]));
        assert!(SURNAMES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn headers_split_into_words() {
        for h in [
            "dateOfBirth",
            "date_of_birth",
            "DATE-OF-BIRTH",
            "Date Of Birth",
        ] {
            assert_eq!(HeaderWords::new(h).words, ["date", "of", "birth"], "{h}");
        }
        assert_eq!(HeaderWords::new("customerSSN").words, ["customer", "ssn"]);
        assert_eq!(HeaderWords::new("IPAddress").words, ["ip", "address"]);
        assert_eq!(HeaderWords::new("DOB").words, ["dob"]);
        assert_eq!(HeaderWords::new("zip5").words, ["zip5"]);
    }

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
            if i % 2 == 0 {
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
    fn every_type_is_read_or_skipped_with_its_reason() {
        use datafusion::arrow::datatypes::{Field, IntervalUnit, TimeUnit};
        for t in [
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
        ] {
            assert_eq!(reading(&t), Ok(Reading::Integer), "{t}");
        }
        assert_eq!(reading(&DataType::Decimal128(38, 2)), Ok(Reading::Decimal));
        assert_eq!(reading(&DataType::Decimal256(50, 0)), Ok(Reading::Decimal));
        assert!(matches!(
            reading(&DataType::Float64),
            Ok(Reading::Float { .. })
        ));
        assert_eq!(
            reading(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            Ok(Reading::Text)
        );
        assert_eq!(
            reading(&DataType::Timestamp(TimeUnit::Microsecond, None)),
            Ok(Reading::Temporal)
        );
        for (t, why) in [
            (DataType::Boolean, "Boolean column"),
            (DataType::Null, "Null column"),
            (DataType::Binary, "Binary column: binary"),
            (DataType::FixedSizeBinary(16), "FixedSizeBinary(16) column"),
            (DataType::Time64(TimeUnit::Nanosecond), "times of day"),
            (DataType::Interval(IntervalUnit::DayTime), "durations"),
            (
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                "nested values are not read",
            ),
            (
                DataType::Struct(vec![Field::new("a", DataType::Utf8, true)].into()),
                "nested values are not read",
            ),
            (
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Binary)),
                "dictionary-encoded Binary column",
            ),
        ] {
            let got = reading(&t).expect_err("skipped");
            assert!(got.contains(why), "{t}: {got}");
        }
    }

    #[test]
    fn numbers_are_read_as_whole_numbers_only_where_every_digit_is_kept() {
        let f64_exact = 2f64.powi(53);
        assert_eq!(
            whole_float(123_456_789.0, f64_exact),
            Whole::Exact(123_456_789)
        );
        // A 16-digit Visa number fits a double exactly; 19 digits don't.
        assert_eq!(
            whole_float(4_111_111_111_111_111.0, f64_exact),
            Whole::Exact(4_111_111_111_111_111)
        );
        assert_eq!(
            whole_float(6_011_000_000_000_000_004.0, f64_exact),
            Whole::TooLarge
        );
        assert_eq!(whole_float(94105.5, f64_exact), Whole::Fraction);
        assert_eq!(whole_float(f64::NAN, f64_exact), Whole::Fraction);
        assert_eq!(whole_float(123_456_789.0, 2f64.powi(24)), Whole::TooLarge);
        assert_eq!(whole_decimal("4155550134.00"), Some("4155550134"));
        assert_eq!(whole_decimal("94105"), Some("94105"));
        assert_eq!(whole_decimal("12.50"), None);
    }

    #[test]
    fn export_style_headers_split_and_name_their_kind() {
        assert_eq!(
            HeaderWords::new("socialSecNo").words,
            ["social", "sec", "no"]
        );
        assert_eq!(HeaderWords::new("CCNumber").words, ["cc", "number"]);
        assert_eq!(
            HeaderWords::new("SOCIAL_SEC_NO").words,
            ["social", "sec", "no"]
        );
        assert_eq!(HeaderWords::new("cust.ssn").words, ["cust", "ssn"]);
        let named = |h: &str, k: Kind| HeaderWords::new(h).hint(k) == Hint::Strong;
        for h in [
            "social_sec_no",
            "sec_no",
            "soc_sec",
            "ssn_no",
            "socialSecNo",
            "SOCIAL_SEC_NUM",
            "Social Security Number",
            "ss_no",
            "SSNNumber",
        ] {
            assert!(named(h, Kind::Ssn), "{h}");
        }
        for h in [
            "cc",
            "cc_num",
            "cc_number",
            "ccNumber",
            "pan",
            "card_no",
            "CardNum",
        ] {
            assert!(named(h, Kind::CreditCard), "{h}");
        }
        for h in [
            "tel_no",
            "phone_no",
            "mobile_no",
            "PHONE2",
            "Phone Number",
            "telno",
        ] {
            assert!(named(h, Kind::Phone), "{h}");
        }
        for h in [
            "zipcode",
            "zip_cd",
            "postal_cd",
            "ZIP",
            "Postal Code",
            "zip5",
        ] {
            assert!(named(h, Kind::PostalCode), "{h}");
        }
        for h in ["dob", "birth_dt", "bday", "BDay", "Date of Birth"] {
            assert!(named(h, Kind::DateOfBirth), "{h}");
        }
        for h in ["e_mail", "emailaddr", "E-Mail", "EMAIL_ADDR", "email2"] {
            assert!(named(h, Kind::Email), "{h}");
        }
        // Only card-valid values count under `payment`.
        assert_eq!(
            HeaderWords::new("payment").hint(Kind::CreditCard),
            Hint::Weak
        );
        for h in ["payment_amount", "account_no", "customer_id", "order_no"] {
            for k in [Kind::Ssn, Kind::Phone, Kind::CreditCard, Kind::PostalCode] {
                assert_eq!(HeaderWords::new(h).hint(k), Hint::Against, "{h} {k:?}");
            }
        }
        // An identifier word yields to a header hinting at the kind.
        assert_eq!(
            HeaderWords::new("payment_id").hint(Kind::CreditCard),
            Hint::Weak
        );
        assert_eq!(
            HeaderWords::new("payment_id").hint(Kind::Ssn),
            Hint::Against
        );
        assert_eq!(HeaderWords::new("tax_id").hint(Kind::Ssn), Hint::Weak);
        // Nothing here names a digit kind.
        for h in [
            "section_no",
            "seconds",
            "secret",
            "card_type_id",
            "cc_email",
        ] {
            assert!(!named(h, Kind::Ssn), "{h}");
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
    fn placeholders_count_as_nulls() {
        assert!(is_placeholder(" N/A "));
        assert!(is_placeholder("unknown"));
        assert!(!is_placeholder("0"));
        assert!(!is_placeholder("a@b.org"));
    }

    #[test]
    fn few_values_are_weak_evidence() {
        let f = classify_column(&col("c", &["123-45-6789"]), today()).unwrap();
        assert!(f.confidence <= 60, "{f:?}");
        assert!(f.evidence.contains("only 1 non-null value"));
    }
}
