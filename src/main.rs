//! The segnet-bayes binary: parse the command line, run the subcommand, report errors in one line.

use clap::Parser;
use segnet_bayes::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Infer(args) => segnet_bayes::infer::run(&args),
        Command::Train(args) => segnet_bayes::train::run(&args),
        Command::Eval(args) => segnet_bayes::eval::run(&args),
        Command::Bench(args) => segnet_bayes::bench::run(&args),
        Command::InitModel(args) => segnet_bayes::infer::init_model(&args),
        Command::Recalibrate(args) => segnet_bayes::train::recalibrate(&args),
    };
    if let Err(e) = result {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
