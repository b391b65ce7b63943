//! `oxnotify-token`: the `oxnotify token` command as a binary of its own (see
//! [`notify_broker::token_cli`]), for configurations that name it directly.

fn main() -> std::process::ExitCode {
    notify_broker::token_cli::run(std::env::args().skip(1))
}
