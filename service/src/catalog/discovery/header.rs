//! A column's header as evidence: its words (`dateOfBirth`,
//! `date_of_birth` and `DOB` all hint at a birth date) and how they bear
//! on each kind, for it, against it (`product_name` for a person's name)
//! or not at all.

use super::Kind;

/// How the header bears on a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Hint {
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
pub(super) struct HeaderWords {
    words: Vec<String>,
    joined: String,
}

impl HeaderWords {
    pub(super) fn new(header: &str) -> Self {
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

    pub(super) fn hint(&self, kind: Kind) -> Hint {
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

pub(super) fn header_reason(header: &str, hint: Hint) -> String {
    match hint {
        Hint::Strong => format!("; the header '{header}' names it"),
        Hint::Weak => format!("; the header '{header}' is consistent with it"),
        Hint::None | Hint::Against => "; the header says nothing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
