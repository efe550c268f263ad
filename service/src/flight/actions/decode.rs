//! `DoAction` bodies as typed requests: each action's protobuf message.

use prost::Message;
use veil_proto::{
    AuditTailRequest, DescribeRequest, DropDatasetRequest, ListUsersRequest, PolicyWriteRequest,
    ReloadRequest, SearchRequest,
};

use crate::error::{Result, VeilError};
use crate::governance::{Action, Request, parse_write};

fn message<T: Message + Default>(body: &[u8]) -> Result<T> {
    T::decode(body).map_err(|_| {
        VeilError::InvalidArgument("the action body is not a valid message for this action".into())
    })
}

pub(super) fn request(action: Action, body: &[u8]) -> Result<Request> {
    Ok(match action {
        Action::WhoAmI => Request::WhoAmI,
        Action::Describe => {
            let r: DescribeRequest = message(body)?;
            Request::Describe { dataset: r.dataset }
        }
        Action::Search => {
            let r: SearchRequest = message(body)?;
            Request::Search {
                query: r.query,
                limit: r.limit,
            }
        }
        Action::RegisterDataset => Request::RegisterDataset(message(body)?),
        Action::DropDataset => {
            let r: DropDatasetRequest = message(body)?;
            Request::DropDataset { dataset: r.name }
        }
        Action::SetColumnTags => Request::SetColumnTags(message(body)?),
        Action::SetDescription => Request::SetDescription(message(body)?),
        Action::SetExperts => Request::SetExperts(message(body)?),
        Action::Accelerate => Request::Accelerate(message(body)?),
        Action::Refresh => Request::Refresh(message(body)?),
        Action::DpBudget => Request::DpBudget(message(body)?),
        Action::Discover => Request::Discover(message(body)?),
        Action::DecideTagProposal => Request::DecideTagProposal(message(body)?),
        Action::SetUserDisabled => Request::SetUserDisabled(message(body)?),
        Action::GrantPermission => Request::GrantPermission(message(body)?),
        Action::RevokePermission => Request::RevokePermission(message(body)?),
        Action::PutUser => Request::PutUser(message(body)?),
        Action::DeleteUser => Request::DeleteUser(message(body)?),
        Action::ListUsers => {
            let _: ListUsersRequest = message(body)?;
            Request::ListUsers
        }
        Action::Reload => {
            let _: ReloadRequest = message(body)?;
            Request::Reload
        }
        Action::AuditTail => {
            let r: AuditTailRequest = message(body)?;
            Request::AuditTail { limit: r.limit }
        }
        Action::CreatePolicy => {
            Request::CreatePolicy(parse_write(&message::<PolicyWriteRequest>(body)?)?)
        }
        Action::UpdatePolicy => {
            Request::UpdatePolicy(parse_write(&message::<PolicyWriteRequest>(body)?)?)
        }
        Action::DeletePolicy => Request::DeletePolicy(message(body)?),
        Action::ListPolicies => Request::ListPolicies(message(body)?),
        Action::Explain => Request::Explain(message(body)?),
        Action::ProfileKAnonymity => Request::ProfileKAnonymity(message(body)?),
        Action::RequestUnmask => Request::RequestUnmask(message(body)?),
        Action::ApproveUnmask => Request::ApproveUnmask(message(body)?),
        Action::DenyUnmask => Request::DenyUnmask(message(body)?),
        Action::ListUnmaskRequests => Request::ListUnmaskRequests(message(body)?),
        Action::UnmaskResult => Request::UnmaskResult(message(body)?),
        Action::RequestAccess => Request::RequestAccess(message(body)?),
        Action::ApproveAccess => Request::ApproveAccess(message(body)?),
        Action::DenyAccess => Request::DenyAccess(message(body)?),
        Action::ListAccessRequests => Request::ListAccessRequests(message(body)?),
        Action::RevokeAccess => Request::RevokeAccess(message(body)?),
    })
}
