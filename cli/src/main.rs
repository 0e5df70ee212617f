//! `kt`: the one binary of kt. Parsing and dispatch live in `app`; each command group has
//! its own module.

mod app;
mod auth;
mod diag;
mod fleet;
mod gateway;
mod init;
mod managed;
mod output;
mod policy;
mod secrets;
mod server;
mod service;
mod session;
mod spend;
mod spend_budgets;
mod spend_keys;
mod templates;

/// mimalloc: the gateway's request path allocates and frees many small buffers across
/// threads, where glibc's allocator showed up as ~15 % of a profile.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    app::main()
}
