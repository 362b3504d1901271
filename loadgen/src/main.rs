//! `strait-loadgen`: benchmark scenarios against any MQTT broker.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the load generator is not built yet")
}
