//! The `spate` binary: parses the command line and hands over to `spate::cli`. Exit codes:
//! 0 success, 1 runtime failure, 2 bad usage or bad input file.

fn main() {
    std::process::exit(spate::cli::main());
}
