//! What a heartbeat carries: a full request, or only what changed since the last one sent.

use klife_protocol::messages::ConsumerGroupHeartbeatRequest;

use super::{ConsumerMember, LEAVE_EPOCH, STATIC_LEAVE_EPOCH, Sent};

impl ConsumerMember {
    /// The leave heartbeat.
    pub(super) fn leave_request(&self) -> ConsumerGroupHeartbeatRequest {
        let epoch = if self.config.instance_id.is_some() { STATIC_LEAVE_EPOCH } else { LEAVE_EPOCH };
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(self.config.group_id.clone())
            .with_member_id(self.config.member_id.clone())
            .with_member_epoch(epoch)
            .with_instance_id(self.config.instance_id.clone())
    }

    /// The next regular heartbeat, full or with only what changed; records what it carries.
    pub(super) fn request(&mut self) -> ConsumerGroupHeartbeatRequest {
        let c = &self.config;
        let names = c.subscription.topic_names().to_vec();
        let regex = c.subscription.topic_regex().map(str::to_owned);
        let mut r = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(c.group_id.clone())
            .with_member_id(c.member_id.clone())
            .with_member_epoch(self.epoch)
            .with_instance_id(c.instance_id.clone());
        let full = self.epoch == 0 || self.sent.is_none();
        if full {
            r = r
                .with_rack_id(c.rack_id.clone())
                .with_rebalance_timeout_ms(c.rebalance_timeout_ms())
                .with_subscribed_topic_names(Some(names.clone()))
                .with_subscribed_topic_regex(regex.clone())
                .with_server_assignor(c.server_assignor.as_ref().map(|a| a.name().to_owned()))
                .with_topic_partitions(Some(if self.epoch == 0 { Vec::new() } else { self.owned.to_request() }));
        } else if let Some(sent) = &self.sent {
            if sent.names != names {
                r = r.with_subscribed_topic_names(Some(names.clone()));
            }
            if sent.regex != regex {
                r = r.with_subscribed_topic_regex(regex.clone());
            }
            if sent.owned_version != self.owned_version {
                r = r.with_topic_partitions(Some(self.owned.to_request()));
            }
        }
        if regex.is_none() && self.regex_clear_pending && self.epoch > 0 {
            r = r.with_subscribed_topic_regex(Some(String::new()));
        }
        self.sent = Some(Sent { names, regex, owned_version: self.owned_version });
        r
    }
}

/// Whether `r` is a full heartbeat as the coordinator counts it: a join, or one with
/// the rebalance timeout, the subscribed names and the owned list. The coordinator
/// answers a full heartbeat with the whole assignment.
pub fn is_full(r: &ConsumerGroupHeartbeatRequest) -> bool {
    r.member_epoch == 0
        || (r.rebalance_timeout_ms != -1 && r.subscribed_topic_names.is_some() && r.topic_partitions.is_some())
}
