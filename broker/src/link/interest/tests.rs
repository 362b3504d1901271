use std::collections::HashMap;

use super::*;

fn link(name: &str, export: &[&str], import: &[&str]) -> LinkConfig {
    let yaml = format!("{{name: {name}, endpoints: ['h:1'], secretFile: /s}}");
    let mut config: LinkConfig = serde_yaml::from_str(&yaml).expect("parse");
    config.export = export.iter().map(|s| s.to_string()).collect();
    config.import = import.iter().map(|s| s.to_string()).collect();
    config
}

/// Clusters joined by links that let everything through, with their ops
/// delivered until nothing more is said.
struct Net {
    tables: HashMap<String, Interest>,
}

impl Net {
    fn new(edges: &[(&str, &str)]) -> Net {
        let mut tables: HashMap<String, Interest> = HashMap::new();
        let mut configs: HashMap<String, Vec<LinkConfig>> = HashMap::new();
        for (a, b) in edges {
            configs
                .entry(a.to_string())
                .or_default()
                .push(link(b, &["#"], &["#"]));
            configs
                .entry(b.to_string())
                .or_default()
                .push(link(a, &["#"], &["#"]));
        }
        for (name, links) in configs {
            let mut table = Interest::new(&name);
            table.set_links(&links);
            tables.insert(name, table);
        }
        Net { tables }
    }

    fn run(&mut self, from: &str, mut ops: Outgoing) {
        let mut queue: Vec<(String, String, LinkOp)> = ops
            .drain(..)
            .map(|(to, op)| (from.to_owned(), to, op))
            .collect();
        while let Some((sender, receiver, op)) = queue.pop() {
            let table = self.tables.get_mut(&receiver).expect("cluster");
            let more = match op {
                LinkOp::Interest {
                    origin,
                    filter,
                    path,
                } => table
                    .learn(&sender, &origin, &filter, path)
                    .map(|(_, out)| out)
                    .unwrap_or_default(),
                LinkOp::InterestGone { origin, filter } => table.forget(&sender, &origin, &filter),
                LinkOp::Reset => {
                    let mut out = Vec::new();
                    table.forget_link(&sender, &mut out);
                    out
                }
                LinkOp::Publish(_) | LinkOp::Position { .. } => Vec::new(),
            };
            queue.extend(more.into_iter().map(|(to, op)| (receiver.clone(), to, op)));
        }
    }

    fn subscribe(&mut self, cluster: &str, filter: &str) {
        let ops = self
            .tables
            .get_mut(cluster)
            .expect("cluster")
            .own_added(filter);
        self.run(cluster, ops);
    }

    fn unsubscribe(&mut self, cluster: &str, filter: &str) {
        let ops = self
            .tables
            .get_mut(cluster)
            .expect("cluster")
            .own_removed(filter);
        self.run(cluster, ops);
    }

    /// Which clusters a message published in `origin` reaches, each copy
    /// followed hop by hop along the routes chosen.
    fn deliveries(&self, origin: &str, topic_name: &str) -> Vec<String> {
        let mut reached = Vec::new();
        let mut copies = vec![(
            origin.to_owned(),
            vec![origin.to_owned()],
            None::<Vec<String>>,
            None::<String>,
        )];
        while let Some((at, path, to, from)) = copies.pop() {
            if to.as_ref().is_some_and(|to| to.contains(&at)) {
                reached.push(at.clone());
            }
            let table = &self.tables[&at];
            for (link, dests) in table.route(topic_name, &path, to.as_deref(), from.as_deref()) {
                let mut next_path = path.clone();
                next_path.push(link.clone());
                copies.push((link.clone(), next_path, Some(dests), Some(at.clone())));
            }
        }
        reached.sort();
        reached
    }
}

#[test]
fn own_interest_is_advertised_narrowed_to_the_import_filters_once_per_filter() {
    let mut table = Interest::new("east");
    table.set_links(&[link("west", &["#"], &["t/a/#", "u/#"])]);
    let ops = table.own_added("t/+/x");
    assert_eq!(
        ops,
        vec![(
            "west".to_owned(),
            LinkOp::Interest {
                origin: "east".into(),
                filter: "t/a/x".into(),
                path: vec!["east".into()]
            }
        )]
    );
    assert!(table.own_added("t/+/x").is_empty(), "counted, told once");
    assert!(
        table.own_added("$share/g/v/#").is_empty(),
        "nothing of it is imported"
    );
    assert_eq!(
        table.own_added("$share/g/u/1").len(),
        1,
        "a shared filter counts as plain interest"
    );
    assert!(table.own_removed("t/+/x").is_empty());
    assert_eq!(
        table.own_removed("t/+/x"),
        vec![(
            "west".to_owned(),
            LinkOp::InterestGone {
                origin: "east".into(),
                filter: "t/a/x".into()
            }
        )]
    );
    assert_eq!(
        table.snapshot("west"),
        vec![
            LinkOp::Reset,
            LinkOp::Interest {
                origin: "east".into(),
                filter: "u/1".into(),
                path: vec!["east".into()]
            }
        ]
    );
}

#[test]
fn learned_interest_is_narrowed_to_the_exports_and_routes_messages() {
    let mut table = Interest::new("east");
    table.set_links(&[link("west", &["fleet/#"], &["#"])]);
    assert!(
        table
            .route("fleet/1", &["east".into()], None, None)
            .is_empty(),
        "nobody wants it"
    );
    let (effective, _) = table
        .learn("west", "west", "+/1", vec!["west".into()])
        .expect("learn");
    assert_eq!(effective, vec!["fleet/1".to_owned()]);
    assert_eq!(
        table.route("fleet/1", &["east".into()], None, None),
        vec![("west".to_owned(), vec!["west".to_owned()])]
    );
    assert!(
        table
            .route("other/1", &["east".into()], None, None)
            .is_empty(),
        "not exported"
    );
    assert!(
        table
            .route("fleet/1", &["east".into(), "west".into()], None, None)
            .is_empty(),
        "never back where it was"
    );
    table.forget("west", "west", "+/1");
    assert!(table
        .route("fleet/1", &["east".into()], None, None)
        .is_empty());
}

#[test]
fn advertisements_that_loop_overreach_or_lie_about_their_path_are_refused() {
    let mut table = Interest::new("east");
    let mut short = link("west", &["#"], &["#"]);
    short.max_hops = 2;
    table.set_links(&[short]);
    let refused = |t: &mut Interest, origin: &str, path: &[&str]| {
        t.learn(
            "west",
            origin,
            "a",
            path.iter().map(|s| s.to_string()).collect(),
        )
        .expect_err("refused")
    };
    assert_eq!(
        refused(&mut table, "x", &["x", "east", "west"]),
        Refusal::Loop
    );
    assert_eq!(
        refused(&mut table, "x", &["x", "y", "west"]),
        Refusal::TooManyHops
    );
    assert_eq!(refused(&mut table, "x", &["y", "west"]), Refusal::BadPath);
    assert_eq!(refused(&mut table, "x", &["x", "z"]), Refusal::BadPath);
    assert_eq!(
        table
            .learn("nowhere", "x", "a", vec!["x".into()])
            .expect_err("refused"),
        Refusal::UnknownLink
    );
}

#[test]
fn a_chain_carries_interest_and_messages_end_to_end() {
    let mut net = Net::new(&[("a", "b"), ("b", "c")]);
    net.subscribe("c", "t/#");
    assert_eq!(net.deliveries("a", "t/1"), vec!["c"]);
    assert!(net.deliveries("a", "u/1").is_empty());
    net.subscribe("b", "t/1");
    assert_eq!(net.deliveries("a", "t/1"), vec!["b", "c"]);
    assert_eq!(
        net.deliveries("c", "t/1"),
        vec!["b"],
        "never back to its origin"
    );
    net.unsubscribe("c", "t/#");
    assert_eq!(net.deliveries("a", "t/1"), vec!["b"]);
}

#[test]
fn a_triangle_and_a_ring_deliver_once_per_interested_cluster() {
    let mut triangle = Net::new(&[("a", "b"), ("b", "c"), ("c", "a")]);
    for cluster in ["a", "b", "c"] {
        triangle.subscribe(cluster, "t/#");
    }
    for origin in ["a", "b", "c"] {
        let mut others: Vec<String> = ["a", "b", "c"]
            .iter()
            .filter(|c| **c != origin)
            .map(|c| c.to_string())
            .collect();
        others.sort();
        assert_eq!(triangle.deliveries(origin, "t/x"), others, "from {origin}");
    }

    let mut ring = Net::new(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]);
    for cluster in ["a", "b", "c", "d"] {
        ring.subscribe(cluster, "#");
    }
    assert_eq!(ring.deliveries("a", "x"), vec!["b", "c", "d"]);
    ring.unsubscribe("c", "#");
    assert_eq!(ring.deliveries("a", "x"), vec!["b", "d"]);
    assert_eq!(ring.deliveries("b", "x"), vec!["a", "d"]);
}

#[test]
fn a_link_removed_withdraws_what_it_taught_the_others() {
    let mut net = Net::new(&[("a", "b"), ("b", "c")]);
    net.subscribe("c", "t/#");
    assert_eq!(net.tables["a"].counts("b"), (1, 0));
    let b = net.tables.get_mut("b").expect("b");
    let (_, ops) = b.set_links(&[link("a", &["#"], &["#"])]);
    net.run("b", ops);
    assert_eq!(net.tables["a"].counts("b"), (0, 0));
    assert!(net.deliveries("a", "t/1").is_empty());
}
