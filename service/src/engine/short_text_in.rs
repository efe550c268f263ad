//! `IN` over a few short texts, without hashing every value.
//!
//! DataFusion evaluates `x IN ('CA', 'NY', ...)` over text by hashing each
//! value and comparing it through a dynamic comparator: a row policy that
//! matches a user's attribute values (`state IN (...)`) or a differential
//! privacy policy's public keys paid for that on every row. When every
//! listed value is a text of at most 16 bytes (and there are at most
//! [`MAX_KEYS`]), a value is read as two integers ([`packed`]) and looked up
//! in a small table where each key has a slot of its own ([`Keys`]): one
//! hash, one load, three comparisons, without a call or a branch per key.
//!
//! [`ShortTextIn`] is a physical optimizer rule: it swaps such an `IN` (or
//! `NOT IN`) in a filter's predicate for [`ShortTextInExpr`], which gives
//! exactly what `IN` gives (SQL's three-valued logic: a null value answers
//! null). The logical plan, `EXPLAIN`'s logical part and what a database
//! source is sent are untouched.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, OffsetSizeTrait, UInt8Array};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{InListExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

/// Most keys compared one by one; longer lists stay `IN` (a hash set).
pub const MAX_KEYS: usize = 16;

/// Longest key, in bytes, that [`packed`] tells apart.
const MAX_KEY_BYTES: usize = 16;

/// Slots of a key table: enough that a collision-free placement of
/// [`MAX_KEYS`] keys is found in a few tries.
const SLOTS: usize = 64;

/// A text of at most 16 bytes as two integers that, with its length, tell
/// it from every other text: its first 8 bytes (fewer, zero-extended, when
/// shorter) and, when longer than 8, its last 8 (overlapping the first when
/// shorter than 16), else 0.
#[inline]
fn packed(v: &[u8]) -> (u64, u64) {
    let n = v.len();
    let mut head = [0u8; 8];
    head[..n.min(8)].copy_from_slice(&v[..n.min(8)]);
    let tail = match n > 8 {
        true => word(v, n - 8),
        false => 0,
    };
    (u64::from_le_bytes(head), tail)
}

#[inline]
fn word(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(b)
}

/// [`packed`] of `data[start..end]`, reading whole words where the buffer
/// allows (no branch on the length; the rare value too near the buffer's
/// ends is packed byte by byte).
#[inline]
fn packed_in(data: &[u8], start: usize, end: usize) -> (u64, u64) {
    let n = end - start;
    if start + 8 > data.len() || end < 8 {
        return packed(&data[start..end.min(start + MAX_KEY_BYTES + 1)]);
    }
    let bits = 8 * n.min(8) as u32;
    let low = u64::MAX.checked_shr(64 - bits).unwrap_or(0);
    let head = word(data, start) & low;
    let tail = word(data, end - 8) & if n > 8 { u64::MAX } else { 0 };
    (head, tail)
}

/// A text array's values by index, each as its length and [`packed`]
/// (meaningless when longer than [`MAX_KEY_BYTES`]), read from the
/// array's buffers without a slice per value.
trait PackedTexts {
    fn packed_at(&self, i: usize) -> (usize, (u64, u64));
}

/// `Utf8` and `LargeUtf8`: whole words of the values buffer.
struct OffsetTexts<'a, O> {
    offsets: &'a [O],
    data: &'a [u8],
}

impl<O: OffsetSizeTrait> PackedTexts for OffsetTexts<'_, O> {
    #[inline(always)]
    fn packed_at(&self, i: usize) -> (usize, (u64, u64)) {
        let (start, end) = (self.offsets[i].as_usize(), self.offsets[i + 1].as_usize());
        (end - start, packed_in(self.data, start, end))
    }
}

/// `Utf8View`: a text of at most 12 bytes is in its view (zero-padded),
/// a longer one in a data buffer.
struct ViewTexts<'a> {
    views: &'a [u128],
    buffers: &'a [datafusion::arrow::buffer::Buffer],
}

impl PackedTexts for ViewTexts<'_> {
    #[inline(always)]
    fn packed_at(&self, i: usize) -> (usize, (u64, u64)) {
        let view = self.views[i];
        let len = view as u32 as usize;
        if len <= 12 {
            // Bytes 4.. of the view are the text's: byte j at bit 32 + 8j.
            let bits = 8 * len.min(8) as u32;
            let head = ((view >> 32) as u64) & u64::MAX.checked_shr(64 - bits).unwrap_or(0);
            let tail = match len > 8 {
                true => (view >> (32 + 8 * (len - 8))) as u64,
                false => 0,
            };
            return (len, (head, tail));
        }
        if len > MAX_KEY_BYTES {
            return (len, (0, 0));
        }
        let v = datafusion::arrow::array::ByteView::from(view);
        let start = v.offset as usize;
        (
            len,
            packed_in(&self.buffers[v.buffer_index as usize], start, start + len),
        )
    }
}

/// `$body` with `$texts` bound to `$array`'s [`PackedTexts`] (one
/// monomorphic loop per text type); an internal error naming `$what` for
/// anything but text.
macro_rules! with_packed_texts {
    ($array:expr, $what:expr, |$texts:ident| $body:expr) => {
        match $array.data_type() {
            DataType::Utf8 => {
                let a = $array.as_string::<i32>();
                let $texts = OffsetTexts {
                    offsets: a.value_offsets(),
                    data: a.value_data(),
                };
                $body
            }
            DataType::LargeUtf8 => {
                let a = $array.as_string::<i64>();
                let $texts = OffsetTexts {
                    offsets: a.value_offsets(),
                    data: a.value_data(),
                };
                $body
            }
            DataType::Utf8View => {
                let a = $array.as_string_view();
                let $texts = ViewTexts {
                    views: a.views(),
                    buffers: a.data_buffers(),
                };
                $body
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "{} takes text, not {other}",
                    $what
                )));
            }
        }
    };
}

/// The length of an empty slot.
const NO_KEY: u8 = u8::MAX;

/// The length a value longer than [`MAX_KEY_BYTES`] is looked up with (its
/// packing means nothing): neither a key's nor an empty slot's.
const TOO_LONG: u8 = u8::MAX - 1;

/// The listed keys in a table of [`SLOTS`] slots where no two keys share a
/// slot ([`Keys::slot`], a multiplicative hash whose multiplier was chosen
/// for these keys), so a membership test is one hash, one load and three
/// comparisons, whatever the number of keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Keys {
    multiplier: u64,
    lens: [u8; SLOTS],
    heads: [u64; SLOTS],
    tails: [u64; SLOTS],
    /// Each slot's key's position among the distinct keys, in the order
    /// first listed.
    positions: [u8; SLOTS],
}

impl Keys {
    /// `None` unless every key is a text of at most 16 bytes and there are
    /// at most [`MAX_KEYS`] distinct ones.
    fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut distinct: Vec<&[u8]> = Vec::new();
        for k in keys {
            if k.len() > MAX_KEY_BYTES {
                return None;
            }
            if !distinct.contains(&k.as_bytes()) {
                distinct.push(k.as_bytes());
            }
        }
        if distinct.len() > MAX_KEYS {
            return None;
        }
        // Multipliers from a fixed sequence (splitmix64): the first that
        // places every key in a slot of its own.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let mut out = Self {
                multiplier: (z ^ (z >> 31)) | 1,
                lens: [NO_KEY; SLOTS],
                heads: [0; SLOTS],
                tails: [0; SLOTS],
                positions: [0; SLOTS],
            };
            let placed = distinct.iter().enumerate().all(|(position, k)| {
                let (head, tail) = packed(k);
                let at = out.slot(k.len() as u8, head, tail);
                if out.lens[at] != NO_KEY {
                    return false;
                }
                (out.lens[at], out.heads[at], out.tails[at]) = (k.len() as u8, head, tail);
                out.positions[at] = position as u8;
                true
            });
            if placed {
                return Some(out);
            }
        }
        None
    }

    #[inline]
    fn slot(&self, len: u8, head: u64, tail: u64) -> usize {
        let mixed = head ^ tail.rotate_left(29) ^ u64::from(len);
        (mixed.wrapping_mul(self.multiplier) >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// Whether the text of `len` bytes packed as `(head, tail)` is a key.
    #[inline]
    fn member_packed(&self, len: usize, packed: (u64, u64)) -> bool {
        self.find_packed(len, packed).0
    }

    /// Whether the text of `len` bytes packed as `(head, tail)` is a key,
    /// and the position of the key in its slot (meaningless when not).
    #[inline]
    fn find_packed(&self, len: usize, (head, tail): (u64, u64)) -> (bool, u8) {
        let len = if len > MAX_KEY_BYTES {
            TOO_LONG
        } else {
            len as u8
        };
        let at = self.slot(len, head, tail);
        let hit = (self.lens[at] == len) & (self.heads[at] == head) & (self.tails[at] == tail);
        (hit, self.positions[at])
    }

    #[cfg(test)]
    fn member(&self, v: &[u8]) -> bool {
        self.find(v).0
    }

    #[cfg(test)]
    fn find(&self, v: &[u8]) -> (bool, u8) {
        match v.len() <= MAX_KEY_BYTES {
            true => self.find_packed(v.len(), packed(v)),
            false => (false, 0),
        }
    }
}

/// A few short texts (at most [`MAX_KEYS`] distinct, each at most 16
/// bytes) and, for each value of a text array, which of them it is: the
/// same slot table as [`ShortTextInExpr`], answering a key's position
/// instead of a yes or no. A differential privacy policy's public keys are
/// grouped by their position (a small integer) instead of their text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShortTextKeys {
    keys: Keys,
    distinct: Vec<String>,
}

impl ShortTextKeys {
    /// `None` unless every key is a text of at most 16 bytes and there are
    /// at most [`MAX_KEYS`] distinct ones.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut distinct: Vec<String> = Vec::new();
        for k in keys {
            if !distinct.iter().any(|d| d == k) {
                distinct.push(k.to_string());
            }
        }
        Some(Self {
            keys: Keys::new(distinct.iter().map(String::as_str))?,
            distinct,
        })
    }

    /// The distinct keys, in the order first listed: position `i` is
    /// `distinct()[i]`.
    pub fn distinct(&self) -> &[String] {
        &self.distinct
    }

    /// Each value's key position; null where the value is null or no key.
    pub fn positions(&self, array: &dyn Array) -> Result<UInt8Array> {
        let n = array.len();
        let (values, hits) = with_packed_texts!(array, "short text keys", |texts| {
            each_position(n, |i| {
                let (len, packed) = texts.packed_at(i);
                self.keys.find_packed(len, packed)
            })
        });
        let valid = match array.nulls() {
            Some(nulls) => &hits & nulls.inner(),
            None => hits,
        };
        Ok(UInt8Array::new(values.into(), Some(NullBuffer::new(valid))))
    }
}

/// `find(i)` for each of `n` values: the positions, and a bit per value
/// that is set when it was found. Written 64 values at a time into
/// buffers sized up front (no length kept in memory per value).
#[inline(always)]
fn each_position(n: usize, find: impl Fn(usize) -> (bool, u8)) -> (Vec<u8>, BooleanBuffer) {
    let mut values = vec![0u8; n];
    let mut words: Vec<u64> = Vec::with_capacity(n.div_ceil(64));
    for (c, chunk) in values.chunks_mut(64).enumerate() {
        let base = c * 64;
        let mut word = 0u64;
        for (j, slot) in chunk.iter_mut().enumerate() {
            let (hit, position) = find(base + j);
            *slot = position;
            word |= u64::from(hit) << j;
        }
        words.push(word);
    }
    let bits = BooleanBuffer::new(datafusion::arrow::buffer::Buffer::from_vec(words), 0, n);
    (values, bits)
}

/// `expr [NOT] IN (keys)` over text, every key short (see the module).
#[derive(Debug, Eq)]
pub struct ShortTextInExpr {
    expr: Arc<dyn PhysicalExpr>,
    /// The listed literals, as `IN` had them (for display).
    list: Vec<Arc<dyn PhysicalExpr>>,
    keys: Keys,
    negated: bool,
}

impl PartialEq for ShortTextInExpr {
    fn eq(&self, other: &Self) -> bool {
        self.expr.eq(&other.expr) && self.keys == other.keys && self.negated == other.negated
    }
}

impl Hash for ShortTextInExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
        self.keys.hash(state);
        self.negated.hash(state);
    }
}

fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

impl ShortTextInExpr {
    /// The cheaper form of `in_list`, when it has one: a text expression
    /// against literal, non-null texts that [`Keys`] takes.
    pub fn from_in_list(in_list: &InListExpr, schema: &Schema) -> Option<Self> {
        if !is_text(&in_list.expr().data_type(schema).ok()?) {
            return None;
        }
        let texts = in_list
            .list()
            .iter()
            .map(|e| match e.downcast_ref::<Literal>()?.value() {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            expr: Arc::clone(in_list.expr()),
            list: in_list.list().to_vec(),
            keys: Keys::new(texts)?,
            negated: in_list.negated(),
        })
    }

    fn test(&self, array: &dyn Array) -> Result<BooleanArray> {
        let n = array.len();
        let negated = self.negated;
        let bits = with_packed_texts!(array, "a short text IN list", |texts| {
            BooleanBuffer::collect_bool(n, |i| {
                let (len, packed) = texts.packed_at(i);
                self.keys.member_packed(len, packed) != negated
            })
        });
        // A null value is neither in nor out: null, as for `IN`.
        Ok(BooleanArray::new(bits, array.nulls().cloned()))
    }
}

impl fmt::Display for ShortTextInExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.list.iter().map(|e| e.to_string()).collect();
        let not = if self.negated { "NOT " } else { "" };
        write!(
            f,
            "{} {not}IN (SHORT TEXT) ([{}])",
            self.expr,
            list.join(", ")
        )
    }
}

impl PhysicalExpr for ShortTextInExpr {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.expr.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.expr.evaluate(batch)? {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(Arc::new(self.test(&array)?))),
            ColumnarValue::Scalar(scalar) => {
                let one = self.test(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&one, 0)?))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.expr]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [expr] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!(
                "a short text IN list takes one child, not {}",
                c.len()
            ))
        })?;
        Ok(Arc::new(Self {
            expr,
            list: self.list.clone(),
            keys: self.keys.clone(),
            negated: self.negated,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt_sql(f)?;
        f.write_str(if self.negated { " NOT IN (" } else { " IN (" })?;
        for (i, e) in self.list.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            e.fmt_sql(f)?;
        }
        f.write_str(")")
    }
}

/// Swaps every short text `IN` in a filter's predicate for
/// [`ShortTextInExpr`].
#[derive(Debug, Default)]
pub struct ShortTextIn;

impl ShortTextIn {
    fn rewrite(
        predicate: &Arc<dyn PhysicalExpr>,
        schema: &Schema,
    ) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
        Arc::clone(predicate).transform_up(|e| {
            let Some(in_list) = e.downcast_ref::<InListExpr>() else {
                return Ok(Transformed::no(e));
            };
            Ok(match ShortTextInExpr::from_in_list(in_list, schema) {
                Some(short) => Transformed::yes(Arc::new(short) as Arc<dyn PhysicalExpr>),
                None => Transformed::no(e),
            })
        })
    }
}

impl PhysicalOptimizerRule for ShortTextIn {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let predicate = Self::rewrite(filter.predicate(), &filter.input().schema())?;
            if !predicate.transformed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(predicate.data)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "veil_short_text_in"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{Expr, SessionContext, col, lit};

    fn context(short: bool) -> SessionContext {
        let mut b = SessionStateBuilder::new().with_default_features();
        if short {
            b = b.with_physical_optimizer_rule(Arc::new(ShortTextIn));
        }
        SessionContext::new_with_state(b.build())
    }

    /// Values near every key: each byte flipped, doubled, extended, other
    /// cases, nulls, longer than 16 bytes.
    fn probe_values(keys: &[&str]) -> StringArray {
        let mut values: Vec<Option<String>> = vec![
            None,
            Some("ny".into()),
            Some("e".into()),
            Some("ABCDEFGHI".into()),
            Some("ABCDEFGHIJKLMNOPQ".into()),
        ];
        for k in keys {
            values.push(Some(k.to_string()));
            let b = k.as_bytes();
            for i in 0..b.len() {
                let mut near = b.to_vec();
                near[i] ^= 1;
                values.push(String::from_utf8(near).ok());
            }
            values.push(Some(format!("{k}{k}")));
            values.push(Some(format!("{k}-{k}")));
            values.push(Some(format!("{k}?")));
            values.push(None);
        }
        StringArray::from(values)
    }

    async fn run(
        ctx: &SessionContext,
        batch: &RecordBatch,
        filter: Expr,
    ) -> (Vec<Option<String>>, String) {
        let frame = ctx
            .read_batch(batch.clone())
            .unwrap()
            .filter(filter)
            .unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let out = frame.collect().await.unwrap();
        let mut rows = Vec::new();
        for b in out {
            let s = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            rows.extend(s.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        }
        (rows, shown)
    }

    /// The rule's filter keeps exactly the rows `IN` and `NOT IN` keep, for
    /// every text type, including under `NOT (...)` and `IS NULL` (where
    /// a null answer differs from false).
    #[tokio::test]
    async fn keeps_exactly_what_in_keeps() {
        let keys = [
            "CA",
            "NY",
            "",
            "Texas",
            "é",
            "ABCDEFGH",
            "xyz",
            "q",
            "hypertension",
            "type 2 diabetes",
            "ABCDEFGHIJKLMNOP",
            "ABCDEFGHX",
            "ABCDEFGHIJKLMNO",
        ];
        let values = probe_values(&keys);
        let list = || keys.iter().map(|k| lit(*k)).collect::<Vec<_>>();
        for dt in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View] {
            let column = datafusion::arrow::compute::cast(&values, &dt).unwrap();
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("g", dt.clone(), true)])),
                vec![column],
            )
            .unwrap();
            let filters = [
                col("g").in_list(list(), false),
                col("g").in_list(list(), true),
                Expr::Not(Box::new(col("g").in_list(list(), false))),
                col("g").in_list(list(), false).is_null(),
                col("g").in_list(list(), true).is_not_true(),
            ];
            for filter in filters {
                let (fast, shown) = run(&context(true), &batch, filter.clone()).await;
                let (reference, plain) = run(&context(false), &batch, filter.clone()).await;
                assert!(shown.contains("IN (SHORT TEXT)"), "{dt} {filter}: {shown}");
                assert!(!plain.contains("SHORT TEXT"), "{plain}");
                assert_eq!(fast, reference, "{dt} {filter}");
            }
            let (kept, _) = run(&context(true), &batch, col("g").in_list(list(), false)).await;
            // Each key once, and the doubled empty key.
            assert_eq!(kept.len(), keys.len() + 1, "{dt}: {kept:?}");
        }
    }

    /// Lists the rule can't take stay `IN`: a long key, too many keys, a
    /// null in the list, numbers.
    #[tokio::test]
    async fn other_lists_stay_in() {
        let values =
            StringArray::from(vec![Some("CA"), Some("ABCDEFGHIJKLMNOPQ"), None, Some("7")]);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("g", DataType::Utf8, true)])),
            vec![Arc::new(values)],
        )
        .unwrap();
        let many: Vec<Expr> = (0..=MAX_KEYS).map(|i| lit(i.to_string())).collect();
        let filters = [
            col("g").in_list(vec![lit("CA"), lit("ABCDEFGHIJKLMNOPQ")], false),
            col("g").in_list(many, false),
            col("g").in_list(vec![lit("CA"), lit(ScalarValue::Utf8(None))], false),
        ];
        for filter in filters {
            let (fast, shown) = run(&context(true), &batch, filter.clone()).await;
            let (reference, _) = run(&context(false), &batch, filter.clone()).await;
            assert!(!shown.contains("SHORT TEXT"), "{filter}: {shown}");
            assert_eq!(fast, reference, "{filter}");
        }
        assert!(Keys::new(["12345678901234567"]).is_none());
        assert!(Keys::new(["1234567890123456"]).is_some());
        let names: Vec<String> = (0..=MAX_KEYS).map(|i| i.to_string()).collect();
        assert!(Keys::new(names.iter().map(String::as_str)).is_none());
        assert!(Keys::new(names[..MAX_KEYS].iter().map(String::as_str)).is_some());
    }

    /// Membership agrees with comparing the texts, over every length up to
    /// past the longest key, for values drawn from two letters, one of them
    /// NUL (so most differ from a key in one or two places, or only in
    /// length): each value tested alone and within an array's buffer (read
    /// by whole words, or byte by byte near the buffer's ends).
    #[test]
    fn member_agrees_with_equality() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let letters = b"a\0";
        let word = |rng: &mut rand::rngs::StdRng, n: usize| -> String {
            (0..n)
                .map(|_| letters[rng.random_range(0..letters.len())] as char)
                .collect()
        };
        for round in 0..200 {
            let keys: Vec<String> = (0..1 + round % MAX_KEYS)
                .map(|_| {
                    let n = rng.random_range(0..=MAX_KEY_BYTES);
                    word(&mut rng, n)
                })
                .collect();
            let set = Keys::new(keys.iter().map(String::as_str)).unwrap();
            let values: Vec<String> = (0..500)
                .map(|_| {
                    let n = rng.random_range(0..=MAX_KEY_BYTES + 8);
                    word(&mut rng, n)
                })
                .chain(keys.iter().cloned())
                .collect();
            let array = StringArray::from_iter_values(&values);
            let (offsets, data) = (array.value_offsets(), array.value_data());
            for (i, v) in values.iter().enumerate() {
                let want = keys.contains(v);
                assert_eq!(set.member(v.as_bytes()), want, "{v:?} in {keys:?}");
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                let packed = packed_in(data, start, end);
                assert_eq!(
                    set.member_packed(end - start, packed),
                    want,
                    "{v:?} at {start}"
                );
            }
        }
        // Duplicates are one key; a value of NULs longer than any key is
        // none, though its packing is that of an empty slot.
        let set = Keys::new(["CA", "CA", "NY"]).unwrap();
        assert!(set.member(b"CA") && set.member(b"NY") && !set.member(b"TX"));
        let zeros = [0u8; 40];
        assert!(!set.member(&zeros[..20]));
        assert!(!set.member_packed(20, packed_in(&zeros, 4, 24)));
    }

    /// Each value's position is that of the equal key (the first listing
    /// of a key listed twice), null for nulls and for values no key
    /// equals, in every text type, for values in and out of an array's
    /// buffer ends.
    #[test]
    fn positions_name_the_equal_key() {
        let keys = [
            "hypertension",
            "type 2 diabetes",
            "CA",
            "",
            "CA",
            "ABCDEFGHIJKLMNOP",
            "é",
        ];
        let set = ShortTextKeys::new(keys).unwrap();
        assert_eq!(
            set.distinct(),
            [
                "hypertension",
                "type 2 diabetes",
                "CA",
                "",
                "ABCDEFGHIJKLMNOP",
                "é"
            ]
        );
        let values = probe_values(&keys);
        for dt in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View] {
            let column = datafusion::arrow::compute::cast(&values, &dt).unwrap();
            let positions = set.positions(&column).unwrap();
            assert_eq!(positions.len(), values.len());
            for i in 0..values.len() {
                let want = values
                    .is_valid(i)
                    .then(|| set.distinct().iter().position(|k| k == values.value(i)))
                    .flatten()
                    .map(|p| p as u8);
                let got = positions.is_valid(i).then(|| positions.value(i));
                assert_eq!(
                    got,
                    want,
                    "{dt}: {:?}",
                    values.is_valid(i).then(|| values.value(i))
                );
            }
            // Sliced: offsets that don't start at the buffer's start.
            let sliced = set.positions(&column.slice(3, values.len() - 3)).unwrap();
            assert_eq!(sliced, positions.slice(3, values.len() - 3), "{dt}");
        }
        assert!(set.positions(&Int32Array::from(vec![1])).is_err());
        assert!(ShortTextKeys::new(["12345678901234567"]).is_none());
    }

    /// A scalar operand answers as `IN` does, null included.
    #[test]
    fn a_scalar_answers_like_in() {
        let schema = Schema::new(vec![Field::new("g", DataType::Utf8, true)]);
        let batch = RecordBatch::new_empty(Arc::new(schema.clone()));
        let list: Vec<Arc<dyn PhysicalExpr>> = vec![
            Arc::new(Literal::new(ScalarValue::Utf8(Some("CA".into())))),
            Arc::new(Literal::new(ScalarValue::Utf8(Some("NY".into())))),
        ];
        for (v, negated, want) in [
            (Some("CA"), false, Some(true)),
            (Some("TX"), false, Some(false)),
            (Some("CA"), true, Some(false)),
            (None, false, None),
            (None, true, None),
        ] {
            let operand = Arc::new(Literal::new(ScalarValue::Utf8(v.map(str::to_string))));
            let in_list = InListExpr::try_new(operand, list.clone(), negated, &schema).unwrap();
            let short = ShortTextInExpr::from_in_list(&in_list, &schema).unwrap();
            let ColumnarValue::Scalar(ScalarValue::Boolean(got)) = short.evaluate(&batch).unwrap()
            else {
                panic!("a scalar");
            };
            assert_eq!(got, want, "{v:?} negated {negated}");
        }
    }
}
