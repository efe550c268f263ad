//! A use case's typed outcome as `DoAction` result bodies: protobuf
//! messages for the typed answers, JSON for documents.

use prost::Message;
use veil_proto::ActionAck;

use crate::governance::Outcome;

pub(super) fn bodies(outcome: Outcome) -> Vec<Vec<u8>> {
    let json = |v: &serde_json::Value| serde_json::to_vec(v).unwrap_or_default();
    match outcome {
        Outcome::Done(message) => vec![ActionAck { message }.encode_to_vec()],
        Outcome::WhoAmI(w) => vec![w.encode_to_vec()],
        Outcome::SearchHits(hits) => hits.iter().map(Message::encode_to_vec).collect(),
        Outcome::Description(d) => vec![d.encode_to_vec()],
        Outcome::Users(users) => users.iter().map(Message::encode_to_vec).collect(),
        Outcome::Requests(requests) => requests
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap_or_default())
            .collect(),
        Outcome::AuditEvents(events) => events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap_or_default())
            .collect(),
        Outcome::Documents(docs) => docs.iter().map(json).collect(),
        Outcome::Report(report) => vec![serde_json::to_vec_pretty(&report).unwrap_or_default()],
    }
}
