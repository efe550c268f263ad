//! Record batches as Flight messages that carry the batches' own buffers.
//!
//! arrow-flight's encoder copies each batch into one contiguous body per
//! message, and `DoGet` then sends that copy. Arrow's IPC stream encoder
//! can instead give a message back as its header and the batch's own
//! buffers (with the padding between them); this module cuts that stream
//! into Flight messages whose body is those buffers, so `DoGet`
//! ([`super::zero_copy_do_get`]) sends a batch without copying it. The
//! bytes a client receives are the ones arrow-flight's encoder would send.
//! A schema with dictionaries keeps arrow-flight's encoder, which sends a
//! dictionary's values as Veil always has.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamEncoder};
use datafusion::arrow::ipc::{MessageHeader, root_as_message};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use prost::Message;
use prost::encoding::{encoded_len_varint, key_len};

/// `FlightData.data_body`'s field number.
pub const DATA_BODY_FIELD: u32 = 1000;

/// Body parts shorter than this (padding, a validity bitmap, a short
/// column) are copied together with their neighbours: one HTTP/2 frame
/// each would cost more than the copy.
const SMALL_PART: usize = 4096;

/// A Flight message as `DoGet` sends it: every field but the Arrow body,
/// then the body as the parts it is made of, in order.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The message without its body (`data_body` is empty).
    pub data: FlightData,
    /// The Arrow body.
    pub body: Vec<Bytes>,
}

impl Outgoing {
    /// The body's length in bytes.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The length of the message as protobuf encodes it (the gRPC frame
    /// prefix aside).
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        let field = if body == 0 {
            0
        } else {
            key_len(DATA_BODY_FIELD) + encoded_len_varint(body as u64) + body
        };
        self.data.encoded_len() + field
    }

    /// The message as one `FlightData`, its body copied into one buffer
    /// (for callers of the generated service, which takes no parts).
    pub fn into_flight_data(self) -> FlightData {
        let mut data = self.data;
        data.data_body = match self.body.len() {
            0 => Bytes::new(),
            1 => self.body.into_iter().next().unwrap_or_default(),
            _ => {
                let mut body = BytesMut::with_capacity(self.body.iter().map(Bytes::len).sum());
                for part in &self.body {
                    body.extend_from_slice(part);
                }
                body.freeze()
            }
        };
        data
    }
}

impl From<FlightData> for Outgoing {
    fn from(mut data: FlightData) -> Self {
        let body = std::mem::take(&mut data.data_body);
        Self {
            data,
            body: if body.is_empty() { vec![] } else { vec![body] },
        }
    }
}

/// The Flight messages of a result: its schema, then each batch, split so a
/// message's body stays under `max_message` bytes where a row allows it
/// (a message over the service's hard cap is refused later, not here).
pub fn encode(
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch, FlightError>>,
    max_message: usize,
) -> BoxStream<'static, Result<Outgoing, FlightError>> {
    if schema
        .fields()
        .iter()
        .any(|f| has_dictionary(f.data_type()))
    {
        return FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(max_message)
            .build(batches)
            .map_ok(Outgoing::from)
            .boxed();
    }
    let options = IpcWriteOptions::default();
    let head = Outgoing::from(FlightData::from(SchemaAsIpc::new(&schema, &options)));
    let mut encoder = match StreamEncoder::try_new_with_options(&schema, options) {
        Ok(e) => e,
        Err(e) => return stream::once(async move { Err(FlightError::Arrow(e)) }).boxed(),
    };
    let declared = Arc::clone(&schema);
    let messages = batches.flat_map(move |batch| {
        let mut out = Vec::new();
        let encoded = batch
            .and_then(|b| as_declared(&declared, b))
            .and_then(|b| split(&mut encoder, &b, max_message, &mut out));
        let tail = encoded.err().map(Err);
        stream::iter(out.into_iter().map(Ok).chain(tail))
    });
    stream::once(async move { Ok(head) })
        .chain(messages)
        .boxed()
}

/// `batch` under the schema its stream declared, as arrow-flight's
/// encoder checks it: a column of another type, or nulls in a column
/// declared without them, is an error, never a body that contradicts the
/// schema the client decodes it with.
fn as_declared(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, FlightError> {
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        batch.columns().to_vec(),
        &options,
    )?)
}

fn has_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, _) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(a, b) => {
            has_dictionary(a.data_type()) || has_dictionary(b.data_type())
        }
        _ => false,
    }
}

/// The bytes `batch` would send: its slices of its buffers, not the whole
/// buffers they share (a block read from a kept copy backs every column).
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_buffer_memory_size())
        })
        .sum()
}

/// `batch` as messages of at most about `max_message` bytes each: first
/// cut into even pieces by its size, then any piece whose message is still
/// too large (uneven rows) halved until it fits or is one row.
fn split(
    encoder: &mut StreamEncoder,
    batch: &RecordBatch,
    max_message: usize,
    out: &mut Vec<Outgoing>,
) -> Result<(), FlightError> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(());
    }
    let pieces = slice_bytes(batch).div_ceil(max_message.max(1)).max(1);
    let per_piece = rows.div_ceil(pieces);
    let mut start = 0;
    while start < rows {
        let len = per_piece.min(rows - start);
        fitted(encoder, &batch.slice(start, len), max_message, out)?;
        start += len;
    }
    Ok(())
}

fn fitted(
    encoder: &mut StreamEncoder,
    piece: &RecordBatch,
    max_message: usize,
    out: &mut Vec<Outgoing>,
) -> Result<(), FlightError> {
    let messages = messages(encoder.encode(piece)?)?;
    let rows = piece.num_rows();
    if rows > 1 && messages.iter().any(|m| m.encoded_len() > max_message) {
        let half = rows / 2;
        fitted(encoder, &piece.slice(0, half), max_message, out)?;
        return fitted(encoder, &piece.slice(half, rows - half), max_message, out);
    }
    out.extend(messages);
    Ok(())
}

/// The bytes of an IPC stream, held as the buffers the encoder produced.
struct Rope {
    parts: std::vec::IntoIter<Buffer>,
    current: Option<Buffer>,
}

impl Rope {
    fn new(parts: Vec<Buffer>) -> Self {
        Self {
            parts: parts.into_iter(),
            current: None,
        }
    }

    fn at_end(&mut self) -> bool {
        loop {
            match &self.current {
                Some(c) if !c.is_empty() => return false,
                _ => match self.parts.next() {
                    Some(next) => self.current = Some(next),
                    None => return true,
                },
            }
        }
    }

    /// The next `n` bytes, as slices of the buffers that hold them.
    fn take(&mut self, mut n: usize) -> Result<Vec<Buffer>, FlightError> {
        let mut out = Vec::new();
        while n > 0 {
            let current = match self.current.take() {
                Some(c) => c,
                None => self.parts.next().ok_or_else(|| {
                    FlightError::ProtocolError("an IPC message ends past its stream".into())
                })?,
            };
            if current.len() <= n {
                n -= current.len();
                if !current.is_empty() {
                    out.push(current);
                }
            } else {
                out.push(current.slice_with_length(0, n));
                self.current = Some(current.slice(n));
                n = 0;
            }
        }
        Ok(out)
    }
}

const CONTINUATION: [u8; 4] = [0xff; 4];

/// The record batch messages of an encoded IPC stream (its schema message,
/// sent once at the start of the Flight stream, is left out).
fn messages(stream: Vec<Buffer>) -> Result<Vec<Outgoing>, FlightError> {
    let mut rope = Rope::new(stream);
    let mut out = Vec::new();
    while !rope.at_end() {
        let prefix = contiguous(&rope.take(8)?);
        let len = match (prefix.get(..4), prefix.get(4..8)) {
            (Some(marker), Some(len)) if marker == CONTINUATION => {
                i32::from_le_bytes([len[0], len[1], len[2], len[3]])
            }
            _ => {
                return Err(FlightError::ProtocolError(
                    "an IPC message lacks its continuation marker".into(),
                ));
            }
        };
        let len = usize::try_from(len).map_err(|_| {
            FlightError::ProtocolError("an IPC message's length is negative".into())
        })?;
        if len == 0 {
            continue; // end of stream
        }
        let header = header(rope.take(len)?);
        let message = root_as_message(&header)
            .map_err(|e| FlightError::ProtocolError(format!("an encoded IPC message: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| FlightError::ProtocolError("an IPC body's length is negative".into()))?;
        let kind = message.header_type();
        let body = rope.take(body_len)?;
        if kind == MessageHeader::Schema {
            continue;
        }
        out.push(Outgoing {
            data: FlightData {
                data_header: header,
                ..Default::default()
            },
            body: gathered(body),
        });
    }
    Ok(out)
}

fn contiguous(parts: &[Buffer]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.as_slice().iter().copied())
        .collect()
}

/// A message's header as arrow-flight sends it: the flatbuffer without the
/// stream's alignment padding, when the encoder wrote that padding apart
/// (as it does); else with it (a flatbuffer reader ignores trailing bytes).
fn header(parts: Vec<Buffer>) -> Bytes {
    match parts.split_first() {
        Some((first, rest)) if rest.iter().all(|p| p.iter().all(|b| *b == 0)) => {
            Bytes::copy_from_slice(first)
        }
        _ => Bytes::from(contiguous(&parts)),
    }
}

/// An Arrow buffer lent to `bytes` without a copy.
struct Lent(Buffer);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The body's parts: large buffers as they are, runs of small ones copied
/// into one.
fn gathered(parts: Vec<Buffer>) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(parts.len());
    let mut small = BytesMut::new();
    for part in parts {
        if part.len() < SMALL_PART {
            small.extend_from_slice(&part);
            continue;
        }
        if !small.is_empty() {
            out.push(small.split().freeze());
        }
        out.push(Bytes::from_owner(Lent(part)));
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::decode::FlightRecordBatchStream;
    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Int64Array, ListArray, StringArray, StructArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};
    use std::sync::Arc;

    fn sample(rows: usize) -> RecordBatch {
        let ints: ArrayRef = Arc::new(Int64Array::from_iter(
            (0..rows as i64).map(|i| (i % 7 != 0).then_some(i * 3)),
        ));
        let strings: ArrayRef =
            Arc::new(StringArray::from_iter((0..rows).map(|i| {
                (i % 5 != 1).then(|| format!("value-{i}-{}", "x".repeat(i % 40)))
            })));
        let flags: ArrayRef = Arc::new(BooleanArray::from_iter(
            (0..rows).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
        ));
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..rows)
                .map(|i| (i % 4 != 0).then(|| (0..(i % 3) as i32).map(Some).collect::<Vec<_>>())),
        ));
        let nested: ArrayRef = Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("n", DataType::Int64, true)),
                Arc::clone(&ints),
            ),
            (
                Arc::new(Field::new("s", DataType::Utf8, true)),
                Arc::clone(&strings),
            ),
        ]));
        RecordBatch::try_from_iter(vec![
            ("ints", ints),
            ("strings", strings),
            ("flags", flags),
            ("lists", lists),
            ("nested", nested),
        ])
        .unwrap()
    }

    async fn sent(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        max_message: usize,
    ) -> Vec<Outgoing> {
        encode(
            schema,
            stream::iter(batches.into_iter().map(Ok)).boxed(),
            max_message,
        )
        .try_collect()
        .await
        .unwrap()
    }

    async fn decoded(messages: Vec<Outgoing>) -> Vec<RecordBatch> {
        let data = messages.into_iter().map(|m| Ok(m.into_flight_data()));
        FlightRecordBatchStream::new_from_flight_data(stream::iter(data))
            .try_collect()
            .await
            .unwrap()
    }

    async fn arrow_flights(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        max_message: usize,
    ) -> Vec<FlightData> {
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(max_message)
            .build(stream::iter(batches.into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_sent_as_arrow_flight_sends_it() {
        let batch = sample(1000);
        let schema = batch.schema();
        let ours = sent(Arc::clone(&schema), vec![batch.clone()], 1 << 30).await;
        let theirs = arrow_flights(schema, vec![batch], 1 << 30).await;
        assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.into_iter().zip(theirs) {
            assert_eq!(o.into_flight_data(), t);
        }
    }

    #[tokio::test]
    async fn every_batch_and_slice_arrives_whole() {
        let batch = sample(5000);
        let schema = batch.schema();
        // Slices at odd offsets: bitmaps off a byte boundary, offsets that
        // don't start at zero.
        let batches = vec![
            batch.slice(0, 1),
            batch.slice(3, 1234),
            batch.slice(1237, 0),
            batch.slice(1237, 3763),
        ];
        for max in [1 << 30, 64 * 1024, 4096, 1] {
            let messages = sent(Arc::clone(&schema), batches.clone(), max).await;
            let got = decoded(messages).await;
            let want = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
            let got = datafusion::arrow::compute::concat_batches(&schema, &got).unwrap();
            assert_eq!(got, want, "max_message {max}");
        }
    }

    #[tokio::test]
    async fn messages_stay_under_the_target_where_rows_allow() {
        let batch = sample(20_000);
        let schema = batch.schema();
        let max = 100 * 1024;
        let messages = sent(schema, vec![batch], max).await;
        assert!(messages.len() > 5, "{} messages", messages.len());
        for m in &messages[1..] {
            assert!(m.encoded_len() <= max, "{} bytes", m.encoded_len());
        }
        // One row over the target still goes, alone.
        let wide = RecordBatch::try_from_iter(vec![(
            "s",
            Arc::new(StringArray::from(vec!["y".repeat(5000), "z".into()])) as ArrayRef,
        )])
        .unwrap();
        let messages = sent(wide.schema(), vec![wide.clone()], 1000).await;
        assert_eq!(messages.len(), 3, "schema, then one message per row");
        assert_eq!(decoded(messages).await.len(), 2);
    }

    #[tokio::test]
    async fn large_buffers_are_sent_not_copied() {
        let values: Vec<i64> = (0..100_000).collect();
        let column = Int64Array::from(values);
        let start = column.values().inner().as_ptr();
        let batch = RecordBatch::try_from_iter(vec![("v", Arc::new(column) as ArrayRef)]).unwrap();
        let messages = sent(batch.schema(), vec![batch], 1 << 30).await;
        let body = &messages[1].body;
        assert!(
            body.iter().any(|part| part.as_ptr() == start),
            "the column's values are sent from where they are"
        );
        assert!(messages[1].encoded_len() > 800_000);
    }

    #[tokio::test]
    async fn dictionaries_are_sent_as_their_values() {
        use datafusion::arrow::array::DictionaryArray;
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a", "c"].into_iter().collect();
        let batch = RecordBatch::try_from_iter(vec![("d", Arc::new(dict) as ArrayRef)]).unwrap();
        let schema = batch.schema();
        let ours = sent(Arc::clone(&schema), vec![batch.clone()], 1 << 30).await;
        let theirs = arrow_flights(schema, vec![batch], 1 << 30).await;
        let ours: Vec<FlightData> = ours.into_iter().map(Outgoing::into_flight_data).collect();
        assert_eq!(ours, theirs);
    }

    #[tokio::test]
    async fn an_empty_result_is_its_schema() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        let messages = sent(Arc::clone(&schema), vec![], 1 << 20).await;
        assert_eq!(messages.len(), 1);
        let theirs = arrow_flights(schema, vec![], 1 << 20).await;
        assert_eq!(messages[0].clone().into_flight_data(), theirs[0]);
    }

    #[tokio::test]
    async fn a_batch_that_contradicts_the_schema_is_an_error() {
        let declared = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let strings = RecordBatch::try_from_iter(vec![(
            "a",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        )])
        .unwrap();
        let nulls = RecordBatch::try_from_iter(vec![(
            "a",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        for batch in [strings, nulls] {
            let out: Vec<_> = encode(
                Arc::clone(&declared),
                stream::iter([Ok(batch)]).boxed(),
                1 << 20,
            )
            .collect()
            .await;
            assert_eq!(out.len(), 2, "the schema, then the error");
            assert!(out[1].is_err());
        }
    }

    #[test]
    fn a_message_is_as_long_as_prost_encodes_it() {
        let m = Outgoing {
            data: FlightData {
                data_header: Bytes::from_static(b"header"),
                app_metadata: Bytes::from_static(b"m"),
                ..Default::default()
            },
            body: vec![Bytes::from(vec![1u8; 300]), Bytes::from(vec![2u8; 70_000])],
        };
        assert_eq!(m.encoded_len(), m.clone().into_flight_data().encoded_len());
        assert_eq!(Outgoing::default().encoded_len(), 0);
    }
}
