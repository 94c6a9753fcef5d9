use std::process::ExitCode;

fn main() -> ExitCode {
    airlock::cli::run()
}
