//! (to be written)
pub fn run(_args: &crate::cli::EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
