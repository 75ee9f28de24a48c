//! What an error answer to a heartbeat means for the member: the error matrix.

use std::time::Instant;

use klife_protocol::{ErrorCode, RetryAction};

use super::{ConsumerMember, LostReason, Outcome};
use crate::error::GroupError;

impl ConsumerMember {
    /// Handles an answer with error `code` (not NONE) to the heartbeat in flight.
    pub(super) fn on_error(&mut self, now: Instant, code: ErrorCode, message: Option<String>) {
        tracing::debug!(group = %self.config.group_id, code = code.name(), ?message, "heartbeat refused");
        self.sent = None;
        let group = self.config.group_id.clone();
        let error = match code {
            ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => {
                self.find_coordinator();
                self.retry_soon(now);
                return;
            }
            ErrorCode::FencedMemberEpoch => return self.lose(now, LostReason::Fenced),
            ErrorCode::UnknownMemberId => return self.lose(now, LostReason::UnknownMember),
            ErrorCode::UnreleasedInstanceId => {
                self.unreleased_attempts += 1;
                if self.unreleased_attempts <= self.config.unreleased_instance_id_retries {
                    self.back_off(now);
                    return;
                }
                GroupError::UnreleasedInstanceId {
                    group,
                    instance_id: self.config.instance_id.clone().unwrap_or_default(),
                    attempts: self.unreleased_attempts,
                    message,
                }
            }
            ErrorCode::UnsupportedVersion if !self.joined_once && self.config.classic_fallback => {
                self.fail(now, Outcome::FallBackToClassic { message });
                return;
            }
            ErrorCode::UnsupportedVersion => GroupError::UnsupportedVersion { group, message },
            ErrorCode::GroupAuthorizationFailed => GroupError::GroupAuthorizationFailed { group, message },
            ErrorCode::InvalidRequest => GroupError::InvalidRequest { group, message },
            ErrorCode::UnsupportedAssignor => GroupError::UnsupportedAssignor {
                group,
                assignor: self.config.server_assignor.as_ref().map(|a| a.name().to_owned()).unwrap_or_default(),
                message,
            },
            ErrorCode::GroupMaxSizeReached => GroupError::GroupMaxSizeReached { group, message },
            ErrorCode::InvalidRegularExpression => GroupError::InvalidRegularExpression {
                group,
                regex: self.config.subscription.topic_regex().map(str::to_owned),
                message,
            },
            ErrorCode::FencedInstanceId => GroupError::FencedInstanceId {
                group,
                instance_id: self.config.instance_id.clone().unwrap_or_default(),
                message,
            },
            ErrorCode::GroupIdNotFound if self.leaving() => return self.lose(now, LostReason::UnknownMember),
            ErrorCode::GroupIdNotFound => GroupError::GroupIdNotFound { group, message },
            other => match other.retry_action() {
                RetryAction::FindCoordinator => {
                    self.find_coordinator();
                    self.retry_soon(now);
                    return;
                }
                RetryAction::Backoff | RetryAction::RefreshMetadata => {
                    self.back_off(now);
                    return;
                }
                RetryAction::Rejoin => return self.lose(now, LostReason::UnknownMember),
                _ => GroupError::Broker { group, code: other, message },
            },
        };
        tracing::warn!(group = %self.config.group_id, %error, "member stops");
        self.fail(now, Outcome::Failed(error));
    }
}
