//! (to be written)
pub fn run(_args: &crate::cli::BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
