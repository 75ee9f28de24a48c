//! Group membership: ConsumerGroupHeartbeat (KIP-848) and the classic JoinGroup,
//! SyncGroup, Heartbeat and LeaveGroup. The coordinator check happens here; the
//! protocols live in `crate::coordinator`. Timers due at the request's `now` run first,
//! so that an expired session is gone before its member's next request is judged.

use klife_protocol::ErrorCode;
use klife_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::groups::coordinator_error;
use super::{Ctx, Reply};
use crate::coordinator::classic::join_error_at;
use crate::state::State;

pub(crate) fn consumer_group_heartbeat(state: &mut State, ctx: &Ctx, r: ConsumerGroupHeartbeatRequest) -> Reply {
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    if code != ErrorCode::None {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code.code())
            .with_member_epoch(-1)
            .with_heartbeat_interval_ms(0)
            .into();
    }
    let topics = state.topic_view();
    state.coordinator.tick(ctx.now_ms);
    state.coordinator.consumer_heartbeat(ctx.client(), &r, ctx.version, &topics, ctx.now_ms).into()
}

pub(crate) fn join_group(state: &mut State, ctx: &Ctx, r: JoinGroupRequest) -> Reply {
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    if code != ErrorCode::None {
        return join_error_at(code, &r.member_id, ctx.version).into();
    }
    state.coordinator.tick(ctx.now_ms);
    match state.coordinator.join(ctx.client(), &r, ctx.version, ctx.now_ms) {
        Ok(resp) => resp.into(),
        Err(ticket) => Reply::Park(ticket),
    }
}

pub(crate) fn sync_group(state: &mut State, ctx: &Ctx, r: SyncGroupRequest) -> Reply {
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    if code != ErrorCode::None {
        return SyncGroupResponse::default().with_error_code(code.code()).into();
    }
    state.coordinator.tick(ctx.now_ms);
    match state.coordinator.sync(&r, ctx.version) {
        Ok(resp) => resp.into(),
        Err(ticket) => Reply::Park(ticket),
    }
}

pub(crate) fn heartbeat(state: &mut State, ctx: &Ctx, r: HeartbeatRequest) -> Reply {
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    if code != ErrorCode::None {
        return HeartbeatResponse::default().with_error_code(code.code()).into();
    }
    state.coordinator.tick(ctx.now_ms);
    state.coordinator.heartbeat(&r, ctx.now_ms).into()
}

pub(crate) fn leave_group(state: &mut State, ctx: &Ctx, r: LeaveGroupRequest) -> Reply {
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    if code != ErrorCode::None {
        return LeaveGroupResponse::default().with_error_code(code.code()).into();
    }
    state.coordinator.tick(ctx.now_ms);
    state.coordinator.leave(&r, ctx.version, ctx.now_ms).into()
}
