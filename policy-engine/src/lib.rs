//! kt-policy: the `policy-config.yaml` contract and the kt policy engine.
//!
//! - [`config`]: serde types that are the YAML contract, layering, the generated JSON
//!   Schema, and the loading pipeline that produces lint diagnostics.
//! - [`CompiledPolicy`]: a validated config compiled for evaluation, with a digest.
//! - [`chain`]: input / tool / output phase evaluation into a [`Decision`].
//! - [`stream`]: SSE framing and the hold-back output guard for streamed answers.
//! - [`wire`]: OpenAI chat ⇄ Anthropic Messages translation, whole and streamed.
//! - [`usage`]: token usage read leniently from answer bytes or trees.
//! - [`testing`]: golden-file and inline test suites (`kt policy test`).
//!
//! No sockets, no async, no files except loading: pure and fast.

pub mod builtins;
pub mod chain;
pub mod compile;
pub mod config;
pub mod corpus;
pub mod decision;
pub mod diagnostics;
pub mod exchange;
pub mod external;
pub mod fuzzing;
pub mod json;
pub mod kinds;
pub mod normalize;
pub mod policies;
pub mod pricing;
pub mod provider_catalog;
pub mod scan;
pub mod secret_binding;
pub mod stream;
pub mod testing;
pub mod text;
pub mod usage;
pub mod wire;
pub mod yaml;

pub use chain::{EvalOptions, FailMode};
pub use compile::{CompileError, CompiledPolicy};
pub use decision::{Decision, PolicyResult, Verdict};
pub use diagnostics::{Code, Diagnostic, Severity};
pub use exchange::Headers;
pub use kinds::Phase;
