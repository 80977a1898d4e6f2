//! Which WebSocket close code a session cut by the chat gets: the policy
//! between the protocol's [`ErrorCode`]s and RFC 6455's close codes. (A
//! violation the WebSocket decoder finds itself carries its own code.)

use crate::codec::ws::close_code;
use crate::codec::ErrorCode;

/// The close code that follows the ERROR frame for `error`.
pub(super) fn code_for(error: ErrorCode) -> u16 {
    match error {
        ErrorCode::FrameTooLarge => close_code::TOO_BIG,
        ErrorCode::Malformed => close_code::PROTOCOL,
        // Slow consumer, timeouts, a full server: policy (1008).
        _ => close_code::POLICY,
    }
}
