//! The segnet-bayes binary: parse the command line, run the subcommand, report errors in one line.

use clap::Parser;
use segnet_bayes::cli::Cli;

fn main() {
    segnet_bayes::fix_math_library_threads();
    end_quietly_on_closed_stdout();
    if let Err(e) = Cli::parse().command.run() {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

/// Like other Unix filters, end when the reader of stdout goes away (`segnet-bayes ... | head`):
/// Rust ignores SIGPIPE, so the next `println!` would panic instead. Outputs already written are
/// whole (atomic writes), and a training run resumes from its last checkpoint.
fn end_quietly_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
