//! Every mask and row rule against every column type it accepts, nulls
//! included, through the real secure view and DataFusion; and every mask
//! refused on the types it does not accept.

use chrono::Utc;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::object_stores::ObjectStores;
use crate::catalog::source_table::SourceTable;
use crate::catalog::{NewDataset, build_dataset};
use crate::error::VeilError;
use crate::model::Origin;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Attributes, ClientInfo, Identity, Principal};
use crate::model::policy::{Policy, PolicySpec};
use crate::policy::barrier::VeilQueryPlanner;
use crate::policy::effective::{check_policy_on, data_policy};
use crate::policy::rules::PolicySpecExt;
use crate::policy::secure_view::{ViewSources, compile, output_schema};
use crate::secrets::{KeyPurpose, MasterKey};

const HOUR: i64 = 3_600;

/// Four rows per column: two values, a null, and a third value. Temporal
/// columns hold "an hour ago", "ten days ago", null, "a minute ago".
fn columns() -> Vec<(&'static str, ArrayRef)> {
    let now = Utc::now().timestamp();
    let t = [
        Some(now - HOUR),
        Some(now - 240 * HOUR),
        None,
        Some(now - 60),
    ];
    let ms = t.map(|x| x.map(|s| s * 1_000));
    let us = t.map(|x| x.map(|s| s * 1_000_000));
    let ns = t.map(|x| x.map(|s| s * 1_000_000_000));
    let days = t.map(|x| x.map(|s| (s / 86_400) as i32));
    vec![
        (
            "i8",
            Arc::new(Int8Array::from(vec![Some(15), Some(-15), None, Some(1)])) as ArrayRef,
        ),
        (
            "i16",
            Arc::new(Int16Array::from(vec![Some(150), Some(-150), None, Some(1)])),
        ),
        (
            "i32",
            Arc::new(Int32Array::from(vec![
                Some(1234),
                Some(-1234),
                None,
                Some(1),
            ])),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![
                Some(123_456),
                Some(-5),
                None,
                Some(1),
            ])),
        ),
        (
            "u8",
            Arc::new(UInt8Array::from(vec![Some(15), Some(42), None, Some(1)])),
        ),
        (
            "u16",
            Arc::new(UInt16Array::from(vec![Some(150), Some(42), None, Some(1)])),
        ),
        (
            "u32",
            Arc::new(UInt32Array::from(vec![Some(1234), Some(42), None, Some(1)])),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![
                Some(123_456),
                Some(42),
                None,
                Some(1),
            ])),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![
                Some(1.25),
                Some(-7.75),
                None,
                Some(1.0),
            ])),
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![
                Some(38.8977),
                Some(-77.0365),
                None,
                Some(1.0),
            ])),
        ),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(12_345), Some(-999), None, Some(100)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        (
            "utf8",
            Arc::new(StringArray::from(vec![
                Some("164.16.13.42"),
                Some("a1"),
                None,
                Some("1"),
            ])),
        ),
        (
            "large",
            Arc::new(LargeStringArray::from(vec![
                Some("164.16.13.42"),
                Some("b2"),
                None,
                Some("1"),
            ])),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
            ])),
        ),
        ("d32", Arc::new(Date32Array::from(days.to_vec()))),
        (
            "d64",
            Arc::new(Date64Array::from(
                days.map(|d| d.map(|d| d as i64 * 86_400_000)).to_vec(),
            )),
        ),
        ("ts_s", Arc::new(TimestampSecondArray::from(t.to_vec()))),
        (
            "ts_ms",
            Arc::new(TimestampMillisecondArray::from(ms.to_vec()).with_timezone("UTC")),
        ),
        (
            "ts_us",
            Arc::new(TimestampMicrosecondArray::from(us.to_vec()).with_timezone("+02:00")),
        ),
        (
            "ts_ns",
            Arc::new(TimestampNanosecondArray::from(ns.to_vec())),
        ),
        (
            "bin",
            Arc::new(BinaryArray::from(vec![
                Some(b"x".as_ref()),
                Some(b"y".as_ref()),
                None,
                Some(b"1".as_ref()),
            ])),
        ),
    ]
}

async fn dataset(dir: &std::path::Path) -> DatasetRecord {
    let cols = columns();
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let path = dir.join("all.parquet");
    let mut w = crate::demo::parquet_writer(std::fs::File::create(&path).unwrap(), schema).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    build_dataset(
        NewDataset {
            name: "t.all".into(),
            source: crate::catalog::NewSource::Files {
                format: "parquet".into(),
                location: path.display().to_string(),
                hive_partitioned: false,
            },
            description: String::new(),
            owners: vec![],
            experts: vec![],
            tags: vec![],
            columns: BTreeMap::new(),
            origin: Origin::Config,
            event_time: None,
        },
        &ObjectStores::local_only(),
        &crate::catalog::database::Databases::none(),
    )
    .await
    .unwrap()
}

fn policy(text: &str) -> Policy {
    let spec: PolicySpec = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    Policy {
        id: "p".into(),
        version: 1,
        origin: Origin::Config,
        rule: spec.validate().unwrap_or_else(|e| panic!("{text}: {e}")),
        spec,
    }
}

fn principal(attrs: &[(&str, &str)]) -> Principal {
    let mut a = Attributes::new();
    for (k, v) in attrs {
        a.entry(k.to_string()).or_default().insert(v.to_string());
    }
    crate::auth::identity::principal(
        Identity::new("i", "u"),
        Default::default(),
        a,
        Default::default(),
        &MasterKey::from_bytes([1; 32]).derive(KeyPurpose::Fingerprint),
        ClientInfo::default(),
    )
}

/// Read the dataset through its secure view; also return the listed schema.
async fn read(d: &DatasetRecord, p: &Policy, who: &Principal) -> (Vec<RecordBatch>, Schema) {
    let e = data_policy(who, d, std::slice::from_ref(p), "i").unwrap();
    let listed = output_schema(d, &e).unwrap();
    let source = Arc::new(
        SourceTable::open(d, None, &ObjectStores::local_only())
            .await
            .unwrap(),
    );
    let plan = compile(
        d,
        &e,
        ViewSources {
            served: source,
            whole: None,
            kept: Default::default(),
            rows_kept: false,
            deal: None,
            counts: None,
        },
        &MasterKey::from_bytes([9; 32]),
        Utc::now(),
        crate::config::DEFAULT_KANON_MAX_GROUPS,
    )
    .unwrap();
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_query_planner(Arc::new(VeilQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let out = DataFrame::new(ctx.state(), plan).collect().await.unwrap();
    (out, listed)
}

fn column(out: &[RecordBatch], name: &str) -> ArrayRef {
    let arrays: Vec<&dyn Array> = out
        .iter()
        .map(|b| b.column_by_name(name).unwrap().as_ref())
        .collect();
    datafusion::arrow::compute::concat(&arrays).unwrap()
}

/// The masks that apply to a column of this name, as TOML values.
fn masks_for(name: &str) -> Vec<&'static str> {
    let mut m = vec!["\"hash\"", "\"null\"", "{ k_anonymity = { k = 2 } }"];
    if name != "bin" {
        m.push("\"reversible\"");
    }
    match name {
        "utf8" | "large" => m.extend([
            "\"format_preserving\"",
            "{ constant = \"x\" }",
            "{ regex = { pattern = '\\d+$', replacement = 'XXX' } }",
        ]),
        "flag" => m.push("{ constant = true }"),
        "bin" => {}
        "f32" | "f64" | "dec" => m.extend([
            "{ constant = 0 }",
            "{ round = { digits = 1 } }",
            "{ round = { digits = -1 } }",
            "{ round = { bucket = 10 } }",
        ]),
        "d32" | "d64" => m.extend([
            "{ constant = \"2020-01-01\" }",
            "{ round = { unit = \"month\" } }",
            "{ round = { unit = \"year\" } }",
        ]),
        n if n.starts_with("ts_") => m.extend([
            "{ constant = \"2020-01-01T00:00:00\" }",
            "{ round = { unit = \"hour\" } }",
            "{ round = { unit = \"day\" } }",
            "{ round = { unit = \"month\" } }",
            "{ round = { unit = \"year\" } }",
        ]),
        _ => m.extend([
            "{ constant = 7 }",
            "{ round = { digits = -1 } }",
            "{ round = { bucket = 10 } }",
        ]),
    }
    m
}

#[tokio::test]
async fn every_mask_on_every_type_it_accepts_keeps_nulls_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = dataset(dir.path()).await;
    let who = principal(&[]);
    for (name, raw) in columns() {
        for mask in masks_for(name) {
            let p = policy(&format!(
                "name = \"m\"\ndataset = \"t.all\"\ncolumns = [\"{name}\"]\nmask = {mask}"
            ));
            check_policy_on(&p, &d).unwrap_or_else(|e| panic!("{name} {mask}: {e}"));
            let (out, listed) = read(&d, &p, &who).await;
            let got = column(&out, name);
            let what = format!("{name} under {mask}");
            assert_eq!(
                got.data_type(),
                listed.field_with_name(name).unwrap().data_type(),
                "{what}: the listed type is the served type"
            );
            // The dictionary's type (parquet serves large strings as Utf8).
            let dictionary_type: DataType = d.column(name).unwrap().data_type.parse().unwrap();
            let expected_type = if mask == "\"hash\"" || mask == "\"reversible\"" {
                DataType::Utf8
            } else {
                dictionary_type
            };
            assert_eq!(got.data_type(), &expected_type, "{what}");
            assert_eq!(got.len(), raw.len(), "{what}");
            for i in 0..raw.len() {
                match mask {
                    "\"null\"" => assert!(got.is_null(i), "{what} row {i}"),
                    // Shown only when its value (nulls included) occurs twice.
                    m if m.contains("k_anonymity") => {
                        let text = |a: &ArrayRef, j: usize| {
                            a.is_valid(j).then(|| {
                                datafusion::arrow::util::display::array_value_to_string(a, j)
                                    .unwrap()
                            })
                        };
                        let seen = (0..raw.len())
                            .filter(|j| text(&raw, *j) == text(&raw, i))
                            .count();
                        let expected = if seen >= 2 { text(&raw, i) } else { None };
                        assert_eq!(text(&got, i), expected, "{what} row {i}");
                    }
                    m if m.starts_with("{ constant") => assert!(got.is_valid(i), "{what} row {i}"),
                    _ => assert_eq!(
                        got.is_null(i),
                        raw.is_null(i),
                        "{what} row {i}: nulls stay null"
                    ),
                }
            }
            // Masks that change values do change them (the raw text of the
            // first row never survives hashing, nulling or regex).
            if matches!(
                mask,
                "\"hash\"" | "\"null\"" | "\"reversible\"" | "\"format_preserving\""
            ) || mask.contains("regex")
            {
                let raw_text =
                    datafusion::arrow::util::display::array_value_to_string(&raw, 0).unwrap();
                let masked_text =
                    datafusion::arrow::util::display::array_value_to_string(&got, 0).unwrap();
                assert_ne!(raw_text, masked_text, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn masks_are_refused_on_types_they_do_not_accept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dataset(dir.path()).await;
    let refused = [
        ("i64", "{ regex = { pattern = 'a', replacement = 'b' } }"),
        ("flag", "{ round = { digits = -1 } }"),
        ("utf8", "{ round = { bucket = 10 } }"),
        ("i32", "{ round = { digits = 2 } }"),
        ("d32", "{ round = { unit = \"hour\" } }"),
        ("d64", "{ round = { unit = \"day\" } }"),
        ("f64", "{ round = { unit = \"month\" } }"),
        ("bin", "{ regex = { pattern = 'a', replacement = 'b' } }"),
        ("i8", "{ constant = \"not a number\" }"),
        ("dec", "{ round = { digits = 2 } }"),
        ("i64", "\"format_preserving\""),
        ("d32", "\"format_preserving\""),
        ("bin", "\"reversible\""),
    ];
    for (name, mask) in refused {
        let p = policy(&format!(
            "name = \"m\"\ndataset = \"t.all\"\ncolumns = [\"{name}\"]\nmask = {mask}"
        ));
        assert!(
            matches!(
                check_policy_on(&p, &d),
                Err(VeilError::FailedPrecondition(_))
            ),
            "{name} {mask}"
        );
        assert!(
            matches!(
                data_policy(&principal(&[]), &d, &[p], "i"),
                Err(VeilError::FailedPrecondition(_))
            ),
            "at read time too: {name} {mask}"
        );
    }
}

#[tokio::test]
async fn row_rules_on_every_type_they_accept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dataset(dir.path()).await;
    // Matching: the attribute's text against the column's values; nulls
    // never match.
    for (name, value) in [
        ("i8", "1"),
        ("u64", "1"),
        ("i64", "1"),
        ("f64", "1"),
        ("utf8", "1"),
        ("large", "1"),
        ("flag", "true"),
        ("dec", "1.00"),
    ] {
        let p = policy(&format!(
            "name = \"r\"\ndataset = \"t.all\"\nrow_filter = {{ column = \"{name}\", attribute = \"k\" }}"
        ));
        let (out, _) = read(&d, &p, &principal(&[("k", value)])).await;
        let got = column(&out, name);
        assert!(!got.is_empty(), "{name} = {value} keeps its rows");
        assert_eq!(got.null_count(), 0, "{name}: a null never matches");
        let (none, _) = read(&d, &p, &principal(&[])).await;
        assert_eq!(
            none.iter().map(|b| b.num_rows()).sum::<usize>(),
            0,
            "{name}: no attribute, no rows"
        );
    }
    // Time windows on every temporal type: the row an hour ago and the one a
    // minute ago stay (dates: whole days inside the window only), ten days
    // ago and null go.
    for name in ["ts_s", "ts_ms", "ts_us", "ts_ns", "d32", "d64"] {
        let p = policy(&format!(
            "name = \"w\"\ndataset = \"t.all\"\nrow_filter = {{ within = \"3 days\", column = \"{name}\" }}"
        ));
        check_policy_on(&p, &d).unwrap();
        let (out, _) = read(&d, &p, &principal(&[])).await;
        let got = column(&out, name);
        assert_eq!(got.null_count(), 0, "{name}");
        assert_eq!(got.len(), 2, "{name}: the recent rows only");
    }
    for name in ["i64", "utf8", "flag"] {
        let p = policy(&format!(
            "name = \"w\"\ndataset = \"t.all\"\nrow_filter = {{ within = \"3 days\", column = \"{name}\" }}"
        ));
        assert!(check_policy_on(&p, &d).is_err(), "{name} is not a time");
    }
    // Stable samples keyed on every type a key can have: a near-total
    // sample keeps the rows whose key is not null, and drops the null one.
    for (name, _) in columns() {
        let p = policy(&format!(
            "name = \"s\"\ndataset = \"t.all\"\nrow_filter = {{ sample = 99.999, column = \"{name}\" }}"
        ));
        check_policy_on(&p, &d).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (out, _) = read(&d, &p, &principal(&[])).await;
        let got = column(&out, name);
        assert_eq!(got.len(), 3, "{name}: the rows with a key");
        assert_eq!(got.null_count(), 0, "{name}: a null key is never sampled");
    }
    // WHERE with the caller's attributes, on several types at once.
    let p = policy(
        "name = \"q\"\ndataset = \"t.all\"\nrow_filter = { where = \"i64 > 0 AND flag AND user_has_attribute('k', utf8)\" }",
    );
    let (out, _) = read(&d, &p, &principal(&[("k", "1"), ("k", "164.16.13.42")])).await;
    let got = column(&out, "i64");
    assert_eq!(got.len(), 2, "rows 1 and 4");
    let (out, _) = read(&d, &p, &principal(&[("k", "1' OR '1'='1")])).await;
    assert_eq!(
        out.iter().map(|b| b.num_rows()).sum::<usize>(),
        0,
        "a hostile value is only a value"
    );
}
