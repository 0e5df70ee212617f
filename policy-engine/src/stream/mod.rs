//! Streaming support for the output phase: SSE framing, where each wire format carries its
//! text deltas, and `OutputGuard`, which runs the output policies over streamed text with a
//! bounded hold-back window.

pub mod delta;
pub mod edits;
pub mod guard;
pub mod sse;

pub use delta::{
    ANTHROPIC_FIELDS, CHAT_FIELDS, RESPONSES_STREAMS, StreamFormat, anthropic_delta_type, chat_key, chat_key_parts,
    responses_key, responses_stream_key, set_text_delta, text_deltas,
};
pub use guard::{OutputGuard, Step};
pub use sse::{SseError, SseEvent, SseParser};
