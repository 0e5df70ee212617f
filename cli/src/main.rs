//! `kt`: the one binary of kt. Parsing and dispatch live in `app`; each command group has
//! its own module.

mod app;
mod gateway;
mod init;
mod output;
mod policy;
mod templates;

fn main() -> std::process::ExitCode {
    app::main()
}
