//! The segnet-bayes binary: parse the command line, run the subcommand, report errors in one line.

use clap::Parser;
use segnet_bayes::cli::Cli;

fn main() {
    segnet_bayes::fix_math_library_threads();
    if let Err(e) = Cli::parse().command.run() {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
