//! `DoGet` without copying the data: tonic's codec copies every
//! `FlightData` message, Arrow body included, into its frame buffer before
//! HTTP/2 sends it. This route answers `DoGet` itself: each message's gRPC
//! frame header and small fields go out as one short buffer and the Arrow
//! body follows as the parts it is made of ([`Outgoing`]: the batch's own
//! buffers, see [`super::batch_messages`]), none of them copied. The wire
//! bytes of each message are the same as tonic's. Every other method goes
//! to the generated Flight service; authentication stays in the layer
//! around both.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

/// The gRPC path of `DoGet`.
const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

use super::batch_messages::{DATA_BODY_FIELD, Outgoing};

/// A gRPC frame's prefix: a compression flag and a 4-byte length.
const FRAME_PREFIX: usize = 5;

/// The largest request Veil's Flight service reads.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The largest message Veil's Flight service ever sends: a hard cap. The
/// config's `engine.max_message_bytes` is the soft target batches are
/// split to; a message over this cap is an error, never sent.
pub const MESSAGE_HARD_CAP_BYTES: usize = 64 * 1024 * 1024;

/// A Flight service whose `DoGet` answers with [`Outgoing`] messages.
#[tonic::async_trait]
pub trait DoGetMessages: Send + Sync + 'static {
    /// `DoGet`, each message's body as its parts.
    async fn do_get_messages(
        &self,
        request: tonic::Request<Ticket>,
    ) -> Result<
        tonic::Response<futures::stream::BoxStream<'static, Result<Outgoing, Status>>>,
        Status,
    >;
}

/// The Flight service with `DoGet` answered by [`respond`].
pub struct FlightRoutes<T: FlightService + DoGetMessages> {
    flight: Arc<T>,
    generated: FlightServiceServer<T>,
    max_request_bytes: usize,
    max_message_bytes: usize,
}

impl<T: FlightService + DoGetMessages> std::fmt::Debug for FlightRoutes<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightRoutes")
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl<T: FlightService + DoGetMessages> Clone for FlightRoutes<T> {
    fn clone(&self) -> Self {
        Self {
            flight: Arc::clone(&self.flight),
            generated: self.generated.clone(),
            max_request_bytes: self.max_request_bytes,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

impl<T: FlightService + DoGetMessages> FlightRoutes<T> {
    /// Requests above `max_request_bytes` and messages above
    /// `max_message_bytes` are refused, on every method.
    pub fn new(flight: Arc<T>, max_request_bytes: usize, max_message_bytes: usize) -> Self {
        let generated = FlightServiceServer::from_arc(Arc::clone(&flight))
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(max_message_bytes);
        Self {
            flight,
            generated,
            max_request_bytes,
            max_message_bytes,
        }
    }
}

impl<T: FlightService + DoGetMessages> NamedService for FlightRoutes<T> {
    const NAME: &'static str = <FlightServiceServer<T> as NamedService>::NAME;
}

impl<T: FlightService + DoGetMessages> tower::Service<http::Request<Body>> for FlightRoutes<T> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != DO_GET_PATH {
            return self.generated.call(req);
        }
        let flight = Arc::clone(&self.flight);
        let (max_request, max_message) = (self.max_request_bytes, self.max_message_bytes);
        Box::pin(async move {
            Ok(respond(flight, req, max_request, max_message)
                .await
                .unwrap_or_else(Status::into_http))
        })
    }
}

/// Decode the ticket, run the service's `do_get` and stream its messages.
async fn respond<T: FlightService + DoGetMessages>(
    flight: Arc<T>,
    req: http::Request<Body>,
    max_request: usize,
    max_message: usize,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, max_request + FRAME_PREFIX)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "the DoGet request exceeds {max_request} bytes; a ticket from GetFlightInfo is far smaller"
                ))
            } else {
                Status::from_error(e)
            }
        })?
        .to_bytes();
    let ticket = decode_request(&bytes)?;
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        ticket,
    );
    let (metadata, messages, _) = flight.do_get_messages(request).await?.into_parts();
    let mut response = http::Response::new(Body::new(StreamBody::new(frames(
        messages.boxed(),
        max_message,
    ))));
    let headers = response.headers_mut();
    headers.extend(metadata.into_headers());
    // As tonic does: the status goes in the trailers, never in headers a
    // handler set.
    for reserved in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "te",
    ] {
        headers.remove(reserved);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// The one `Ticket` message of a unary gRPC request body.
fn decode_request(bytes: &[u8]) -> Result<Ticket, Status> {
    let malformed =
        || Status::invalid_argument("the DoGet request is not one gRPC message holding a Ticket");
    let (prefix, message) = bytes.split_at_checked(FRAME_PREFIX).ok_or_else(malformed)?;
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed DoGet requests are not supported; send the ticket uncompressed",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len != message.len() {
        return Err(malformed());
    }
    Ticket::decode(message).map_err(|e| {
        Status::invalid_argument(format!("the DoGet request is not a Ticket message: {e}"))
    })
}

/// The HTTP/2 frames of a `DoGet` response: each message as its head and
/// its Arrow body's parts, then the trailers carrying the call's status
/// (the stream's first error ends it, as in tonic).
fn frames(
    messages: futures::stream::BoxStream<'static, Result<Outgoing, Status>>,
    max_message: usize,
) -> impl Stream<Item = Result<Frame<Bytes>, Status>> + Send + 'static {
    futures::stream::unfold(
        (Some(messages), std::collections::VecDeque::<Bytes>::new()),
        move |(messages, mut body)| async move {
            if let Some(part) = body.pop_front() {
                return Some((Ok(Frame::data(part)), (messages, body)));
            }
            let mut stream = messages?;
            let status = match stream.next().await {
                Some(Ok(message)) => match encode(message, max_message) {
                    Ok((head, parts)) => {
                        return Some((Ok(Frame::data(head)), (Some(stream), parts.into())));
                    }
                    Err(status) => status,
                },
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            // Dropping the stream here, before the trailers, starts its
            // audit record of the read's end (written in the background).
            drop(stream);
            Some((Ok(Frame::trailers(trailers(&status))), (None, body)))
        },
    )
}

/// `status` as gRPC trailers.
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Err(unwritable) = status.add_header(&mut map) {
        // A message that can't be a header value: send the code alone.
        map.clear();
        tracing::warn!(error = %unwritable, "a status message could not be sent as a trailer");
        let _ = Status::new(status.code(), "").add_header(&mut map);
    }
    map
}

/// One message as a gRPC frame: the frame prefix with every field but
/// `data_body`, ending in `data_body`'s key and length; then `data_body`'s
/// parts themselves, not copied. Fields are written in field-number order
/// with `data_body` (field 1000) last, so the bytes are prost's.
fn encode(message: Outgoing, max_message: usize) -> Result<(Bytes, Vec<Bytes>), Status> {
    let len = checked_len(&message, max_message)?;
    let body_len = message.body_len();
    let mut head = BytesMut::with_capacity(FRAME_PREFIX + len - body_len);
    head.put_u8(0);
    head.put_u32(len as u32);
    message.data.encode_raw(&mut head);
    if body_len > 0 {
        encode_key(DATA_BODY_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(body_len as u64, &mut head);
    }
    let parts = message.body.into_iter().filter(|p| !p.is_empty()).collect();
    Ok((head.freeze(), parts))
}

/// The encoded length of `message`, refused with `OutOfRange` past
/// `max_message` (or past a gRPC frame's 4-byte length). The service checks
/// each message with this before its read's audit sees it, so such a read
/// is recorded as failed, not as cancelled; [`encode`] checks again.
pub fn checked_len(message: &Outgoing, max_message: usize) -> Result<usize, Status> {
    let len = message.encoded_len();
    if len > max_message || u32::try_from(len).is_err() {
        return Err(Status::out_of_range(format!(
            "a Flight message of {len} bytes exceeds the limit of {max_message} bytes; lower engine.max_message_bytes or the batch size"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::{FlightData, FlightDescriptor};

    fn joined(head: Bytes, body: Vec<Bytes>) -> Vec<u8> {
        std::iter::once(head)
            .chain(body)
            .flat_map(|b| b.to_vec())
            .collect()
    }

    fn framed(data: &FlightData) -> Vec<u8> {
        let message = data.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
        out
    }

    #[test]
    fn messages_are_framed_as_prost_frames_them() {
        let cases = [
            FlightData::default(),
            FlightData {
                data_header: Bytes::from_static(b"header"),
                data_body: Bytes::from(vec![7u8; 70_000]),
                ..Default::default()
            },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_path(vec!["a".into()])),
                data_header: Bytes::from_static(b"h"),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: Bytes::from_static(b"body"),
            },
            FlightData {
                data_header: Bytes::from_static(b"schema only"),
                ..Default::default()
            },
            // A body alone, and bodies whose length takes one, two and
            // three varint bytes.
            FlightData {
                data_body: Bytes::from(vec![5u8; 100]),
                ..Default::default()
            },
            FlightData {
                data_header: Bytes::from(vec![1u8; 300]),
                data_body: Bytes::from(vec![6u8; 200]),
                ..Default::default()
            },
        ];
        for data in cases {
            let (head, body) = encode(data.clone().into(), 1 << 20).unwrap();
            assert_eq!(joined(head, body), framed(&data), "{data:?}");
        }
        // A body in parts is framed as the same body in one piece.
        let parts = Outgoing {
            data: FlightData {
                data_header: Bytes::from_static(b"header"),
                ..Default::default()
            },
            body: vec![
                Bytes::from(vec![1u8; 100]),
                Bytes::new(),
                Bytes::from(vec![2u8; 70_000]),
            ],
        };
        let whole = parts.clone().into_flight_data();
        let (head, body) = encode(parts, 1 << 20).unwrap();
        assert_eq!(body.len(), 2, "empty parts are not sent");
        assert_eq!(joined(head, body), framed(&whole));
    }

    #[test]
    fn the_body_is_not_copied() {
        let body = Bytes::from(vec![1u8; 4096]);
        let data = FlightData {
            data_body: body.clone(),
            ..Default::default()
        };
        let (_, sent) = encode(data.into(), 1 << 20).unwrap();
        assert_eq!(sent[0].as_ptr(), body.as_ptr());
    }

    #[test]
    fn oversized_messages_are_refused() {
        let data = FlightData {
            data_body: Bytes::from(vec![0u8; 2000]),
            ..Default::default()
        };
        let data = Outgoing::from(data);
        let err = encode(data.clone(), 1000).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        // The limit is on the message, the 5-byte frame prefix aside: a
        // message of exactly the limit goes.
        let exact = data.encoded_len();
        assert!(encode(data.clone(), exact).is_ok());
        assert_eq!(
            encode(data, exact - 1).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn requests_must_be_one_uncompressed_ticket() {
        let ticket = Ticket::new("t");
        let good = framed_ticket(0, &ticket.encode_to_vec());
        assert_eq!(decode_request(&good).unwrap(), ticket);
        assert_eq!(
            decode_request(&framed_ticket(1, &ticket.encode_to_vec()))
                .unwrap_err()
                .code(),
            tonic::Code::Unimplemented
        );
        for bad in [
            &[][..],
            &[0, 0, 0][..],
            &good[..good.len() - 1],
            &[good.clone(), good.clone()].concat()[..],
            &framed_ticket(0, &[0xff, 0xff, 0xff])[..],
        ] {
            assert_eq!(
                decode_request(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    fn framed_ticket(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[tokio::test]
    async fn trailers_end_the_stream_after_the_first_error() {
        let messages = futures::stream::iter(vec![
            Ok(Outgoing::from(FlightData {
                data_header: Bytes::from_static(b"h"),
                data_body: Bytes::from_static(b"b"),
                ..Default::default()
            })),
            Err(Status::internal("the source died: ü")),
            Ok(Outgoing::default()),
        ])
        .boxed();
        let out: Vec<_> = frames(messages, 1 << 20).collect().await;
        assert_eq!(out.len(), 3, "head, body, trailers");
        let trailers = out[2].as_ref().unwrap().trailers_ref().unwrap();
        assert_eq!(trailers["grpc-status"], "13");
        assert_eq!(trailers["grpc-message"], "the%20source%20died:%20%C3%BC");

        let empty = futures::stream::iter(Vec::new()).boxed();
        let out: Vec<_> = frames(empty, 1 << 20).collect().await;
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].as_ref().unwrap().trailers_ref().unwrap()["grpc-status"],
            "0"
        );
    }
}
