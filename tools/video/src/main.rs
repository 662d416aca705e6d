//! segnet-video: videos and frame folders through Bayesian SegNet.
//!
//! For each input: `source` decodes frames on one thread, the network (`segnet_bayes::infer`)
//! predicts them on this one, `frame` draws input | overlay | heatmap in parallel, and the
//! encoder thread writes the video and the per-frame CSV (`table`); `pipeline` joins the
//! stages, `state` makes an interrupted run resumable, `lock` keeps a second run out of an
//! output folder, `plot` draws uncertainty over time.

mod cli;
mod frame;
mod lock;
mod maps;
mod pipeline;
mod plot;
mod run;
mod sampler;
mod source;
mod state;
mod stop;
mod table;
mod temporal;

use clap::Parser;

fn main() {
    passive_openmp();
    segnet_bayes::fix_math_library_threads();
    quiet_opencv();
    let cli = cli::Cli::parse();
    if let Err(e) = run::run(&cli) {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        let code = if e.is::<run::Interrupted>() { 130 } else { 1 };
        std::process::exit(code);
    }
}

/// OpenCV and FFmpeg print their own warnings for every unreadable file; the errors here say
/// the same in one line. `OPENCV_FFMPEG_LOGLEVEL` set by the user wins.
fn quiet_opencv() {
    if std::env::var_os("OPENCV_FFMPEG_LOGLEVEL").is_none() {
        // AV_LOG_QUIET; set before OpenCV loads FFmpeg, while this is the only thread.
        std::env::set_var("OPENCV_FFMPEG_LOGLEVEL", "-8");
    }
    let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_SILENT);
}

/// libtorch's OpenMP threads spin while they wait for work, and here they wait while the
/// decode, render and encode threads need the same cores: measured on the 2-core machine,
/// spinning took 70% of the CPU time and a run went 4.7x slower. libgomp reads its wait policy
/// once, when it loads, so the process starts itself again with `OMP_WAIT_POLICY=passive`
/// (same process id, same arguments). A policy set by the user wins.
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // exec returns only when it failed; then run as started.
    let _ = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "passive")
        .exec();
}
