//! Flight SQL prepared statements without server state: a handle is a
//! signed, encrypted ticket body (`TicketUse::PreparedStatement`) holding
//! the query and its bound parameters, bound to the caller. Any node can
//! open it; every execution plans afresh under the caller's current
//! policies, so a handle grants nothing a new statement wouldn't.

use veil_proto::{SqlCommand, TicketBody, TicketCommand, TicketUse};

use crate::error::Result;
use crate::flight::tickets::{TicketSigner, body_for};
use crate::model::identity::Principal;

/// How long a handle stays valid. Tools such as DBeaver keep statements
/// for a whole working session.
pub const HANDLE_TTL_MS: i64 = 24 * 3600 * 1000;

/// A handle for `command`, issued to `principal` at state `version`,
/// valid until `expires_at_ms`.
pub fn issue(
    signer: &TicketSigner,
    principal: &Principal,
    version: u64,
    command: SqlCommand,
    now_ms: i64,
    expires_at_ms: i64,
) -> Vec<u8> {
    signer.sign(TicketBody {
        query_id: uuid::Uuid::new_v4().to_string(),
        planned_at_ms: now_ms,
        r#use: TicketUse::PreparedStatement as i32,
        ..body_for(
            principal,
            version,
            expires_at_ms,
            TicketCommand::Sql(command),
        )
    })
}

/// The statement a handle holds, and when the handle expires, if it is
/// genuine, unexpired and the caller's.
pub fn open(
    signer: &TicketSigner,
    handle: &[u8],
    principal: &Principal,
    now_ms: i64,
) -> Result<(SqlCommand, i64)> {
    let body = signer.verify_handle(handle, principal, now_ms)?;
    match body.command {
        Some(TicketCommand::Sql(sql)) => Ok((sql, body.expires_at_ms)),
        _ => Err(crate::error::VeilError::InvalidArgument(
            "the prepared statement handle holds no query; prepare the statement again".into(),
        )),
    }
}
