//! `dtq bench`.

use crate::cli::{BenchArgs, Global};
use anyhow::Result;

pub async fn run(_g: &Global, _a: BenchArgs) -> Result<()> {
    anyhow::bail!("bench is not built yet")
}
