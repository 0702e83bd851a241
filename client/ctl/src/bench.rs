//! `percyctl bench WORKLOAD`: the options and the workloads live in `percy-bench`; this runs
//! one against the cluster of `--endpoints` (or the local cluster it asks for) and prints the
//! report in percyctl's output format.

use anyhow::Result;

use crate::output::print_line;
use crate::Ctx;

pub async fn run(ctx: &Ctx, args: percy_bench::Args) -> Result<()> {
    let endpoints = ctx.client.endpoints().to_vec();
    let security = ctx.client.security().clone();
    let report = percy_bench::run(
        endpoints,
        ctx.client.retry_policy(),
        args.consistency(),
        security,
        args,
    )
    .await?;
    let text = if ctx.out.is_json() {
        report.json()?
    } else {
        report.table()?
    };
    print_line(&text)
}
