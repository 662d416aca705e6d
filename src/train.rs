//! (to be written)
pub fn run(_args: &crate::cli::TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
