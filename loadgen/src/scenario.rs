//! What the benchmark runs: topologies, loads and the plan that combines them.
//!
//! Every broker gets exactly the same plan, so a row of the report compares
//! like with like.

use std::fmt;
use std::time::Duration;

use strait_broker::protocol::QoS;

/// Who publishes to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `n` publisher/subscriber pairs, each pair on its own topic.
    Pairs(usize),
    /// `n` publishers on distinct topics, one subscriber on a wildcard covering them.
    FanIn(usize),
    /// One publisher, `n` subscribers of its topic.
    FanOut(usize),
}

/// How hard publishers push.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// As fast as the broker takes it (QoS 1: as fast as the inflight window allows).
    Max,
    /// A fixed offered load, in PUBLISH packets per second summed over all publishers.
    Rate(f64),
}

/// The topics of a run: one per publisher, one filter per subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub publishers: Vec<String>,
    pub subscribers: Vec<String>,
}

/// One row of the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub topology: Topology,
    pub qos: QoS,
    pub payload_size: usize,
    pub load: Load,
}

impl Scenario {
    /// The topics for this scenario under `prefix` (unique per run, so runs never
    /// see each other's messages).
    pub fn layout(&self, prefix: &str) -> Layout {
        match self.topology {
            Topology::Pairs(n) => {
                let topics: Vec<String> = (0..n).map(|i| format!("{prefix}/pair/{i}")).collect();
                Layout {
                    publishers: topics.clone(),
                    subscribers: topics,
                }
            }
            Topology::FanIn(n) => Layout {
                publishers: (0..n).map(|i| format!("{prefix}/in/{i}")).collect(),
                subscribers: vec![format!("{prefix}/in/+")],
            },
            Topology::FanOut(n) => Layout {
                publishers: vec![format!("{prefix}/out")],
                subscribers: vec![format!("{prefix}/out"); n],
            },
        }
    }

    /// The offered load of each publisher, in messages per second (`None`: unlimited).
    pub fn rate_per_publisher(&self) -> Option<f64> {
        match self.load {
            Load::Max => None,
            Load::Rate(total) => {
                let publishers = self.layout("").publishers.len().max(1);
                Some(total / publishers as f64)
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.topology {
            Topology::Pairs(n) => write!(f, "1:1 x{n}")?,
            Topology::FanIn(n) => write!(f, "fan-in {n}:1")?,
            Topology::FanOut(n) => write!(f, "fan-out 1:{n}")?,
        }
        write!(
            f,
            ", QoS {}, {}",
            self.qos as u8,
            PayloadSize(self.payload_size)
        )?;
        if let Load::Rate(rate) = self.load {
            write!(f, ", {rate:.0} msg/s offered")?;
        }
        Ok(())
    }
}

/// A payload size as people write it: 64 B, 1 KiB.
struct PayloadSize(usize);

impl fmt::Display for PayloadSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1024 && self.0 % 1024 == 0 {
            write!(f, "{} KiB", self.0 / 1024)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

/// How long each run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Traffic flows but is not counted (connections and caches settle).
    pub warmup: Duration,
    /// Traffic is counted.
    pub measure: Duration,
}

/// Everything run against each broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Unlimited-load runs, reported as delivered messages per second.
    pub throughput: Vec<Scenario>,
    /// Fixed-load runs, reported as latency percentiles.
    pub latency: Vec<Scenario>,
    /// Runs repeated on one Strait node and across a two-node Strait cluster
    /// (publishers on one node, subscribers on the other), reported as the
    /// cross-node throughput and p99 latency relative to the single node's.
    pub cross_node: Vec<Scenario>,
    pub timing: Timing,
    /// Connections opened for the memory-per-connection figure.
    pub idle_connections: usize,
    /// Messages each publisher sends in the fan-in delivery runs.
    pub delivery_per_publisher: u32,
    /// The cluster nodes' `cluster.deliveryLanes` (0: the broker's default).
    pub delivery_lanes: usize,
}

/// The fixed offered load of the latency runs (messages per second in total).
pub const LATENCY_RATE: f64 = 10_000.0;

impl Plan {
    /// The full benchmark: three topologies x QoS 0/1 x 64 B/1 KiB, plus latency
    /// at a fixed load, plus 10,000 idle connections. About 90 s per broker.
    pub fn full() -> Plan {
        let mut throughput = Vec::new();
        for topology in [
            Topology::Pairs(8),
            Topology::FanIn(16),
            Topology::FanOut(32),
        ] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                for payload_size in [64, 1024] {
                    throughput.push(Scenario {
                        topology,
                        qos,
                        payload_size,
                        load: Load::Max,
                    });
                }
            }
        }
        let latency: Vec<Scenario> = [QoS::AtMostOnce, QoS::AtLeastOnce]
            .into_iter()
            .map(|qos| Scenario {
                topology: Topology::Pairs(8),
                qos,
                payload_size: 64,
                load: Load::Rate(LATENCY_RATE),
            })
            .collect();
        let max = |topology, qos| Scenario {
            topology,
            qos,
            payload_size: 64,
            load: Load::Max,
        };
        let mut cross_node = vec![
            max(Topology::Pairs(8), QoS::AtMostOnce),
            max(Topology::FanIn(16), QoS::AtMostOnce),
            max(Topology::Pairs(8), QoS::AtLeastOnce),
            max(Topology::FanOut(32), QoS::AtLeastOnce),
        ];
        cross_node.extend(latency.iter().cloned());
        Plan {
            throughput,
            latency,
            cross_node,
            timing: Timing {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(4),
            },
            idle_connections: 10_000,
            delivery_per_publisher: 10_000,
            delivery_lanes: 0,
        }
    }

    /// A smoke test of every code path in a few seconds per broker (twice that
    /// for the cross-node runs, which Strait makes on one node and on two).
    pub fn quick() -> Plan {
        let scenario = |topology, qos, payload_size| Scenario {
            topology,
            qos,
            payload_size,
            load: Load::Max,
        };
        let latency = Scenario {
            topology: Topology::Pairs(4),
            qos: QoS::AtLeastOnce,
            payload_size: 64,
            load: Load::Rate(2_000.0),
        };
        Plan {
            throughput: vec![
                scenario(Topology::Pairs(4), QoS::AtMostOnce, 64),
                scenario(Topology::FanIn(4), QoS::AtLeastOnce, 64),
                scenario(Topology::FanOut(4), QoS::AtLeastOnce, 1024),
            ],
            cross_node: vec![
                scenario(Topology::FanIn(4), QoS::AtMostOnce, 64),
                scenario(Topology::Pairs(4), QoS::AtLeastOnce, 64),
                latency.clone(),
            ],
            latency: vec![latency],
            timing: Timing {
                warmup: Duration::from_millis(200),
                measure: Duration::from_millis(800),
            },
            idle_connections: 1_000,
            delivery_per_publisher: 1_000,
            delivery_lanes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(topology: Topology, load: Load) -> Scenario {
        Scenario {
            topology,
            qos: QoS::AtLeastOnce,
            payload_size: 64,
            load,
        }
    }

    #[test]
    fn pairs_have_one_distinct_topic_per_pair() {
        let layout = scenario(Topology::Pairs(3), Load::Max).layout("run");
        assert_eq!(
            layout.publishers,
            ["run/pair/0", "run/pair/1", "run/pair/2"]
        );
        assert_eq!(layout.subscribers, layout.publishers);
    }

    #[test]
    fn fan_in_has_one_wildcard_subscriber() {
        let layout = scenario(Topology::FanIn(2), Load::Max).layout("run");
        assert_eq!(layout.publishers, ["run/in/0", "run/in/1"]);
        assert_eq!(layout.subscribers, ["run/in/+"]);
    }

    #[test]
    fn fan_out_has_many_subscribers_of_one_topic() {
        let layout = scenario(Topology::FanOut(3), Load::Max).layout("run");
        assert_eq!(layout.publishers, ["run/out"]);
        assert_eq!(layout.subscribers, ["run/out", "run/out", "run/out"]);
    }

    #[test]
    fn the_offered_load_is_split_among_publishers() {
        assert_eq!(
            scenario(Topology::Pairs(8), Load::Rate(10_000.0)).rate_per_publisher(),
            Some(1250.0)
        );
        assert_eq!(
            scenario(Topology::FanOut(8), Load::Rate(500.0)).rate_per_publisher(),
            Some(500.0)
        );
        assert_eq!(
            scenario(Topology::Pairs(8), Load::Max).rate_per_publisher(),
            None
        );
    }

    #[test]
    fn names_say_topology_qos_size_and_load() {
        let mut s = scenario(Topology::FanIn(16), Load::Max);
        s.payload_size = 1024;
        assert_eq!(s.to_string(), "fan-in 16:1, QoS 1, 1 KiB");
        let s = scenario(Topology::Pairs(8), Load::Rate(10_000.0));
        assert_eq!(s.to_string(), "1:1 x8, QoS 1, 64 B, 10000 msg/s offered");
    }

    #[test]
    fn the_full_plan_covers_every_combination_once() {
        let plan = Plan::full();
        assert_eq!(plan.throughput.len(), 12);
        let mut names: Vec<String> = plan.throughput.iter().map(ToString::to_string).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 12);
        assert!(plan
            .latency
            .iter()
            .all(|s| s.load == Load::Rate(LATENCY_RATE)));
        assert_eq!(plan.idle_connections, 10_000);
    }

    #[test]
    fn the_quick_plan_is_short() {
        let plan = Plan::quick();
        let runs = (plan.throughput.len() + plan.latency.len()) as u32;
        let per_broker = (plan.timing.warmup + plan.timing.measure) * runs;
        assert!(per_broker < Duration::from_secs(10), "{per_broker:?}");
        let cross = (plan.timing.warmup + plan.timing.measure) * 2 * plan.cross_node.len() as u32;
        assert!(cross < Duration::from_secs(10), "{cross:?}");
    }

    #[test]
    fn cross_node_runs_cover_qos_0_fan_in_qos_1_throughput_and_latency() {
        for plan in [Plan::full(), Plan::quick()] {
            let runs = &plan.cross_node;
            assert!(runs.iter().any(|s| matches!(s.topology, Topology::FanIn(_))
                && s.qos == QoS::AtMostOnce
                && s.load == Load::Max));
            assert!(runs
                .iter()
                .any(|s| s.qos == QoS::AtLeastOnce && s.load == Load::Max));
            assert!(runs.iter().any(|s| matches!(s.load, Load::Rate(_))));
        }
    }
}
