//! Who a client proved to be: the outcome of authentication, independent of any one policy
//! version. A principal is re-found in each new policy by name and password hash, so a user
//! deleted, disabled or given a new password no longer resolves.

use std::net::IpAddr;

use policy::UserId;
use proto::FailureKind;

use crate::live::LivePolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials; allowed only from the policy's anonymous client networks.
    Anonymous,
    User(Identity),
    /// Named by a verified TLS client certificate: stands while the user exists and is
    /// enabled (no password is involved).
    Certified(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: Box<str>,
    /// The hash the password was verified against: a new password revokes the principal.
    password_hash: Box<str>,
}

impl Principal {
    pub fn user(name: &str, password_hash: &str) -> Principal {
        Principal::User(Identity {
            name: name.into(),
            password_hash: password_hash.into(),
        })
    }

    /// This principal's standing in `policy`: its user id (None: anonymous), or why it has
    /// none there.
    pub fn resolve(
        &self,
        policy: &LivePolicy,
        client: IpAddr,
    ) -> Result<Option<UserId>, FailureKind> {
        match self {
            Principal::Anonymous if policy.anonymous_allowed(client) => Ok(None),
            Principal::Anonymous => Err(FailureKind::AuthRequired),
            Principal::Certified(name) => match policy.user_by_name(name) {
                Some((id, u)) if u.enabled => Ok(Some(id)),
                _ => Err(FailureKind::Revoked),
            },
            Principal::User(identity) => {
                let (id, u) = policy
                    .user_by_name(&identity.name)
                    .ok_or(FailureKind::Revoked)?;
                if u.enabled && *u.password_hash == *identity.password_hash {
                    Ok(Some(id))
                } else {
                    Err(FailureKind::Revoked)
                }
            }
        }
    }
}
