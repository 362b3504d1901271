//! `strait-operator`: reconciles MqttCluster and ClusterLink resources.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the operator is not built yet")
}
