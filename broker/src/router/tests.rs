//! Router behaviour: matching rules, merging, no-local, shared groups, pruning,
//! and a randomised comparison against a brute-force matcher.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{Delivery, Router, Scope, SubscribeOutcome};
use crate::protocol::{QoS, SubscriptionOptions};

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

fn q0() -> SubscriptionOptions {
    opts(QoS::AtMostOnce)
}

fn route_all(router: &Router<u32>, topic: &str, publisher: Option<u32>) -> Vec<(u32, Delivery)> {
    let mut out = Vec::new();
    router.route(topic, publisher.as_ref(), |_| true, &mut out);
    out
}

fn receivers(router: &Router<u32>, topic: &str) -> Vec<u32> {
    let mut keys: Vec<u32> = route_all(router, topic, None)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort_unstable();
    keys
}

/// Whether a lone subscription to `filter` receives a message on `topic`.
fn matches(filter: &str, topic: &str) -> bool {
    let mut router = Router::new();
    router.subscribe(1, filter, q0(), None);
    !receivers(&router, topic).is_empty()
}

#[test]
fn literal_filters_match_only_the_same_topic() {
    assert!(matches("a/b", "a/b"));
    assert!(!matches("a/b", "a"));
    assert!(!matches("a/b", "a/b/c"));
    assert!(!matches("a/b", "a/c"));
    assert!(!matches("A/b", "a/b"));
}

#[test]
fn plus_matches_exactly_one_level() {
    assert!(matches("sport/+", "sport/tennis"));
    assert!(matches("sport/+/player1", "sport/tennis/player1"));
    assert!(!matches("sport/+", "sport/tennis/player1"));
    assert!(!matches("sport/+", "sport"));
    assert!(matches("sport/+", "sport/"));
    assert!(matches("+", "sport"));
    assert!(matches("+/+", "a/b"));
    assert!(!matches("+/+", "a"));
}

#[test]
fn hash_matches_the_parent_and_every_level_below() {
    assert!(matches("sport/#", "sport"));
    assert!(matches("sport/#", "sport/"));
    assert!(matches("sport/#", "sport/tennis"));
    assert!(matches("sport/#", "sport/tennis/player1/ranking"));
    assert!(!matches("sport/#", "sports"));
    assert!(!matches("sport/#", "other/sport"));
    assert!(matches("sport/+/#", "sport/tennis"));
    assert!(!matches("sport/+/#", "sport"));
    assert!(matches("+/#", "a"));
}

#[test]
fn hash_alone_matches_every_topic_except_dollar_ones() {
    assert!(matches("#", "a"));
    assert!(matches("#", "a/b/c"));
    assert!(matches("#", "/"));
    assert!(matches("#", "/a"));
    assert!(!matches("#", "$SYS"));
    assert!(!matches("#", "$SYS/broker/load"));
}

#[test]
fn leading_wildcards_never_match_dollar_topics() {
    assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!matches("+", "$SYS"));
    assert!(!matches("+/#", "$SYS/x"));
    assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
    assert!(matches("$SYS/#", "$SYS"));
    assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    // Only the first level is special.
    assert!(matches("a/+", "a/$b"));
    assert!(matches("a/#", "a/$b/c"));
}

#[test]
fn empty_levels_are_real_levels() {
    assert!(matches("+/+", "/finance"));
    assert!(matches("/+", "/finance"));
    assert!(!matches("+", "/finance"));
    assert!(matches("a//b", "a//b"));
    assert!(matches("a/+/b", "a//b"));
    assert!(!matches("a/b", "a//b"));
    assert!(matches("/", "/"));
    assert!(matches("+/+", "/"));
    assert!(!matches("+", "/"));
    assert!(matches("#", "/finance"));
    assert!(matches("/#", "/finance"));
}

#[test]
fn resubscribing_replaces_options_and_identifier() {
    let mut router = Router::new();
    assert_eq!(
        router.subscribe(1, "a/b", q0(), Some(4)),
        SubscribeOutcome::New
    );
    assert_eq!(
        router.subscribe(1, "a/b", opts(QoS::ExactlyOnce), Some(9)),
        SubscribeOutcome::Replaced
    );
    assert_eq!(router.len(), 1);
    let out = route_all(&router, "a/b", None);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.qos, QoS::ExactlyOnce);
    assert_eq!(out[0].1.subscription_ids, vec![9]);

    // Another key or another filter is a new subscription.
    assert_eq!(
        router.subscribe(2, "a/b", q0(), None),
        SubscribeOutcome::New
    );
    assert_eq!(
        router.subscribe(1, "a/+", q0(), None),
        SubscribeOutcome::New
    );
    assert_eq!(router.len(), 3);
}

#[test]
fn unsubscribe_reports_whether_there_was_a_subscription() {
    let mut router = Router::new();
    router.subscribe(1, "a/b", q0(), None);
    assert!(!router.unsubscribe(&2, "a/b"));
    assert!(!router.unsubscribe(&1, "a/+"));
    assert!(!router.unsubscribe(&1, "a/b/c"));
    assert!(!router.unsubscribe(&1, "a/#"));
    assert!(router.unsubscribe(&1, "a/b"));
    assert!(!router.unsubscribe(&1, "a/b"));
    assert!(router.is_empty());
    assert!(receivers(&router, "a/b").is_empty());
}

#[test]
fn no_local_skips_only_the_publishers_own_subscriptions() {
    let mut router = Router::new();
    let no_local = SubscriptionOptions {
        no_local: true,
        ..q0()
    };
    router.subscribe(1, "chat", no_local, None);
    router.subscribe(2, "chat", no_local, None);
    router.subscribe(3, "chat", q0(), None);
    let mut keys: Vec<u32> = route_all(&router, "chat", Some(1))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, vec![2, 3]);
    // A subscriber without no-local hears its own messages.
    assert_eq!(route_all(&router, "chat", Some(3)).len(), 3);
}

#[test]
fn no_local_on_one_filter_does_not_hide_the_others() {
    let mut router = Router::new();
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::ExactlyOnce)
    };
    router.subscribe(1, "a/b", no_local, Some(1));
    router.subscribe(1, "a/+", q0(), Some(2));
    let out = route_all(&router, "a/b", Some(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.qos, QoS::AtMostOnce);
    assert_eq!(out[0].1.subscription_ids, vec![2]);
}

#[test]
fn overlapping_subscriptions_merge_into_one_delivery() {
    let mut router = Router::new();
    router.subscribe(1, "a/b", opts(QoS::AtLeastOnce), Some(7));
    router.subscribe(1, "a/+", opts(QoS::ExactlyOnce), Some(3));
    router.subscribe(1, "#", q0(), Some(7));
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..q0()
    };
    router.subscribe(1, "a/#", rap, None);
    router.subscribe(1, "x", opts(QoS::ExactlyOnce), Some(1));
    let out = route_all(&router, "a/b", None);
    assert_eq!(
        out,
        vec![(
            1,
            Delivery {
                qos: QoS::ExactlyOnce,
                retain_as_published: true,
                subscription_ids: vec![3, 7],
                shared: None,
            }
        )]
    );
}

#[test]
fn deliveries_without_identifiers_have_an_empty_list() {
    let mut router = Router::new();
    router.subscribe(1, "a", q0(), None);
    router.subscribe(1, "+", opts(QoS::AtLeastOnce), None);
    let out = route_all(&router, "a", None);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.subscription_ids.is_empty());
    assert_eq!(out[0].1.qos, QoS::AtLeastOnce);
    assert!(!out[0].1.retain_as_published);
}

#[test]
fn large_overlapping_fan_outs_merge_per_key() {
    let mut router = Router::new();
    for key in 0..1000 {
        router.subscribe(key, "metrics/#", q0(), Some(1));
        router.subscribe(key, "metrics/+", opts(QoS::AtLeastOnce), Some(2));
        // Every other key also has an exact subscription.
        if key % 2 == 0 {
            router.subscribe(key, "metrics/cpu", q0(), Some(3));
        }
    }
    router.subscribe(5000, "metrics/cpu", q0(), None);
    let out = route_all(&router, "metrics/cpu", None);
    assert_eq!(out.len(), 1001);
    let by_key: HashMap<u32, Delivery> = out.into_iter().collect();
    assert_eq!(by_key.len(), 1001);
    for key in 0..1000 {
        let delivery = &by_key[&key];
        assert_eq!(delivery.qos, QoS::AtLeastOnce);
        let expected = if key % 2 == 0 {
            vec![1, 2, 3]
        } else {
            vec![1, 2]
        };
        assert_eq!(delivery.subscription_ids, expected, "key {key}");
    }
    assert!(by_key[&5000].subscription_ids.is_empty());
}

#[test]
fn route_appends_without_touching_earlier_entries() {
    let mut router = Router::new();
    router.subscribe(1, "a", opts(QoS::AtLeastOnce), Some(2));
    router.subscribe(1, "+", q0(), Some(1));
    let earlier = (
        1,
        Delivery {
            qos: QoS::AtMostOnce,
            retain_as_published: false,
            subscription_ids: Vec::new(),
            shared: None,
        },
    );
    let mut out = vec![earlier.clone()];
    router.route("a", None, |_| true, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], earlier);
    assert_eq!(out[1].1.subscription_ids, vec![1, 2]);
}

#[test]
fn shared_group_rotates_evenly() {
    let mut router = Router::new();
    for key in 1..=3 {
        router.subscribe(key, "$share/workers/jobs/+", q0(), None);
    }
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..300 {
        let out = route_all(&router, "jobs/build", None);
        assert_eq!(out.len(), 1);
        *counts.entry(out[0].0).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([(1, 100), (2, 100), (3, 100)]));
}

#[test]
fn shared_group_prefers_online_members() {
    let mut router = Router::new();
    for key in 1..=3 {
        router.subscribe(key, "$share/g/jobs", q0(), None);
    }
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..300 {
        let mut out = Vec::new();
        router.route("jobs", None, |key| *key != 2, &mut out);
        assert_eq!(out.len(), 1);
        *counts.entry(out[0].0).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([(1, 150), (3, 150)]));
}

#[test]
fn shared_group_with_nobody_online_still_picks_a_member() {
    let mut router = Router::new();
    for key in 1..=2 {
        router.subscribe(key, "$share/g/jobs", q0(), None);
    }
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..10 {
        let mut out = Vec::new();
        router.route("jobs", None, |_| false, &mut out);
        assert_eq!(out.len(), 1);
        *counts.entry(out[0].0).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([(1, 5), (2, 5)]));
}

#[test]
fn shared_delivery_uses_the_chosen_members_options() {
    let mut router = Router::new();
    router.subscribe(1, "$share/g/t", opts(QoS::ExactlyOnce), Some(11));
    router.subscribe(2, "$share/g/t", q0(), None);
    let first = route_all(&router, "t", None);
    let second = route_all(&router, "t", None);
    assert_eq!(first[0].0, 1);
    assert_eq!(first[0].1.qos, QoS::ExactlyOnce);
    assert_eq!(first[0].1.subscription_ids, vec![11]);
    assert_eq!(second[0].0, 2);
    assert_eq!(second[0].1.qos, QoS::AtMostOnce);
}

#[test]
fn groups_are_told_apart_by_name_and_filter() {
    let mut router = Router::new();
    router.subscribe(1, "$share/a/t/+", q0(), None);
    router.subscribe(1, "$share/b/t/+", q0(), None);
    router.subscribe(1, "$share/a/t/#", q0(), None);
    assert_eq!(router.len(), 3);
    // One delivery per group, even though they all go to key 1.
    assert_eq!(route_all(&router, "t/x", None).len(), 3);
    assert_eq!(
        router.subscribe(1, "$share/a/t/+", opts(QoS::AtLeastOnce), None),
        SubscribeOutcome::Replaced
    );
    assert_eq!(router.len(), 3);
}

#[test]
fn shared_and_ordinary_subscriptions_deliver_separately() {
    let mut router = Router::new();
    router.subscribe(1, "$share/g/t", opts(QoS::AtLeastOnce), None);
    router.subscribe(1, "t", q0(), None);
    let out = route_all(&router, "t", None);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(key, _)| *key == 1));
    // The ordinary delivery is not raised to the shared one's QoS.
    assert_eq!(out[0].1.qos, QoS::AtMostOnce);
    assert_eq!(out[1].1.qos, QoS::AtLeastOnce);
}

#[test]
fn shared_subscriptions_ignore_no_local() {
    let mut router = Router::new();
    let no_local = SubscriptionOptions {
        no_local: true,
        ..q0()
    };
    router.subscribe(1, "$share/g/t", no_local, None);
    assert_eq!(route_all(&router, "t", Some(1)).len(), 1);
}

#[test]
fn shared_unsubscribe_removes_only_that_membership() {
    let mut router = Router::new();
    router.subscribe(1, "$share/g/t", q0(), None);
    router.subscribe(2, "$share/g/t", q0(), None);
    router.subscribe(1, "t", q0(), None);
    assert!(!router.unsubscribe(&1, "$share/other/t"));
    assert!(router.unsubscribe(&1, "$share/g/t"));
    assert!(!router.unsubscribe(&1, "$share/g/t"));
    assert_eq!(router.len(), 2);
    for _ in 0..4 {
        let mut keys: Vec<u32> = route_all(&router, "t", None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![1, 2]);
    }
    assert!(router.unsubscribe(&2, "$share/g/t"));
    assert_eq!(receivers(&router, "t"), vec![1]);
}

#[test]
fn leaving_members_keep_the_rotation_valid() {
    let mut router = Router::new();
    for key in 1..=3 {
        router.subscribe(key, "$share/g/t", q0(), None);
    }
    assert_eq!(receivers(&router, "t"), vec![1]);
    assert_eq!(receivers(&router, "t"), vec![2]);
    assert_eq!(receivers(&router, "t"), vec![3]);
    router.unsubscribe(&3, "$share/g/t");
    router.unsubscribe(&2, "$share/g/t");
    for _ in 0..3 {
        assert_eq!(receivers(&router, "t"), vec![1]);
    }
}

#[test]
fn subscribe_unsubscribe_cycles_leave_the_trie_empty() {
    let mut router = Router::new();
    let filters = [
        "a/b/c",
        "a/+/c",
        "a/#",
        "#",
        "+",
        "/",
        "//x//",
        "+/+/+/#",
        "$share/g/a/b",
        "$share/h/+/#",
        "$SYS/broker/+",
    ];
    for cycle in 0..10_000u32 {
        let filter = filters[cycle as usize % filters.len()];
        let key = cycle % 7;
        // A filter that is new every cycle, so fresh nodes are made each time.
        let fresh = match filter.strip_suffix('#') {
            Some(prefix) => format!("{prefix}{cycle}/#"),
            None => format!("{filter}/{cycle}"),
        };
        router.subscribe(key, &fresh, q0(), Some(cycle + 1));
        router.subscribe(key, filter, q0(), None);
        assert!(router.node_count() > 1);
        assert!(router.unsubscribe(&key, filter));
        assert!(router.unsubscribe(&key, &fresh));
    }
    assert!(router.is_empty());
    assert_eq!(router.node_count(), 1);
}

#[test]
fn unsubscribe_keeps_nodes_still_in_use() {
    let mut router = Router::new();
    router.subscribe(1, "a/b/c", q0(), None);
    router.subscribe(1, "a/b", q0(), None);
    router.subscribe(2, "a/+/c", q0(), None);
    let before = router.node_count();
    assert!(router.unsubscribe(&1, "a/b/c"));
    // Node `c` under `a/b` goes; `a`, `a/b`, `a/+`, `a/+/c` stay.
    assert_eq!(router.node_count(), before - 1);
    assert_eq!(receivers(&router, "a/b"), vec![1]);
    assert_eq!(receivers(&router, "a/b/c"), vec![2]);
    assert!(!router.unsubscribe(&1, "a/x/y/z"));
    assert_eq!(router.node_count(), before - 1);
}

/// The MQTT matching rules written out directly, level by level.
fn brute_force_matches(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic_levels: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && matches!(filter[0], "+" | "#") {
        return false;
    }
    for (at, level) in filter.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match topic_levels.get(at) {
            Some(name) if *level == "+" || level == name => {}
            _ => return false,
        }
    }
    filter.len() == topic_levels.len()
}

fn random_filter(rng: &mut StdRng) -> String {
    const LEVELS: [&str; 5] = ["a", "b", "", "+", "$s"];
    let depth = rng.gen_range(1..=4);
    let mut levels: Vec<&str> = (0..depth)
        .map(|_| *LEVELS.choose(rng).unwrap_or(&"a"))
        .collect();
    if rng.gen_bool(0.25) {
        levels.push("#");
    }
    levels.join("/")
}

fn random_topic(rng: &mut StdRng) -> String {
    const LEVELS: [&str; 4] = ["a", "b", "", "$s"];
    let depth = rng.gen_range(1..=5);
    (0..depth)
        .map(|_| *LEVELS.choose(rng).unwrap_or(&"a"))
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn route_agrees_with_a_brute_force_matcher() {
    let mut rng = StdRng::seed_from_u64(0x5354_5241_4954);
    let mut router = Router::new();
    // The expected state: (key, filter) -> (options, id).
    let mut model: HashMap<(u32, String), (SubscriptionOptions, Option<u32>)> = HashMap::new();
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for round in 0..400u32 {
        let key = rng.gen_range(0..12);
        let filter = random_filter(&mut rng);
        if rng.gen_bool(0.2) {
            let removed = model.remove(&(key, filter.clone())).is_some();
            assert_eq!(router.unsubscribe(&key, &filter), removed, "{filter}");
        } else {
            let options = SubscriptionOptions {
                qos: *qos.choose(&mut rng).unwrap_or(&QoS::AtMostOnce),
                no_local: rng.gen_bool(0.2),
                retain_as_published: rng.gen_bool(0.3),
                ..SubscriptionOptions::default()
            };
            let id = rng.gen_bool(0.5).then(|| rng.gen_range(1..6));
            let existed = model.insert((key, filter.clone()), (options, id)).is_some();
            let expected = if existed {
                SubscribeOutcome::Replaced
            } else {
                SubscribeOutcome::New
            };
            assert_eq!(router.subscribe(key, &filter, options, id), expected);
        }
        assert_eq!(router.len(), model.len());
        if round % 4 != 0 {
            continue;
        }
        for _ in 0..10 {
            let topic = random_topic(&mut rng);
            let publisher = rng.gen_bool(0.5).then(|| rng.gen_range(0..12));
            let mut expected: BTreeMap<u32, Delivery> = BTreeMap::new();
            for ((key, filter), (options, id)) in &model {
                if !brute_force_matches(filter, &topic)
                    || (options.no_local && publisher == Some(*key))
                {
                    continue;
                }
                let entry = expected.entry(*key).or_insert(Delivery {
                    qos: QoS::AtMostOnce,
                    retain_as_published: false,
                    subscription_ids: Vec::new(),
                    shared: None,
                });
                entry.qos = entry.qos.max(options.qos);
                entry.retain_as_published |= options.retain_as_published;
                entry.subscription_ids.extend(id);
                entry.subscription_ids.sort_unstable();
                entry.subscription_ids.dedup();
            }
            let out = route_all(&router, &topic, publisher);
            let got: BTreeMap<u32, Delivery> = out.iter().cloned().collect();
            assert_eq!(got.len(), out.len(), "one delivery per key for {topic}");
            assert_eq!(got, expected, "topic {topic:?}");
        }
    }
    assert!(!model.is_empty());
}

#[test]
fn very_deep_filters_and_topics_do_not_exhaust_the_stack() {
    let deep = vec!["a"; 20_000].join("/");
    let deep_plus = vec!["+"; 20_000].join("/");
    let mut router = Router::new();
    router.subscribe(1, &deep, q0(), None);
    router.subscribe(2, &deep_plus, q0(), None);
    router.subscribe(3, &format!("{deep}/#"), q0(), None);
    assert_eq!(receivers(&router, &deep), vec![1, 2, 3]);
    assert!(router.unsubscribe(&1, &deep));
    assert!(router.unsubscribe(&3, &format!("{deep}/#")));
    assert_eq!(router.node_count(), 20_001);
    // Dropping the remaining deep chain must not recurse per level either.
    drop(router);
}

/// Routes a peer's message: only even keys are local, only the chosen groups.
struct LocalOnly {
    plain: bool,
    groups: Vec<&'static str>,
}

impl Scope<u32> for LocalOnly {
    fn allows(&self, key: &u32) -> bool {
        key % 2 == 0
    }
    fn plain(&self) -> bool {
        self.plain
    }
    fn group(&self, id: &str) -> bool {
        self.groups.contains(&id)
    }
}

#[test]
fn scoped_routing_serves_allowed_keys_and_chosen_groups_only() {
    let mut router = Router::new();
    router.subscribe(1, "a/+", q0(), None);
    router.subscribe(2, "a/+", q0(), None);
    router.subscribe(3, "$share/g/a/#", q0(), None);
    router.subscribe(4, "$share/g/a/#", q0(), None);
    router.subscribe(6, "$share/h/a/#", q0(), None);
    let mut out = Vec::new();
    let scope = LocalOnly {
        plain: true,
        groups: vec!["$share/g/a/#"],
    };
    for _ in 0..3 {
        router.route_within("a/b", None, |_| true, &scope, &mut out);
    }
    let keys: Vec<u32> = out.iter().map(|(k, _)| *k).collect();
    // Key 2 (plain) and key 4 (the only allowed member of g), three times;
    // group h was not chosen and key 3 is not allowed.
    assert_eq!(keys, vec![2, 4, 2, 4, 2, 4]);
    assert_eq!(out[1].1.shared.as_deref(), Some("$share/g/a/#"));
    assert_eq!(out[0].1.shared, None);

    out.clear();
    let groups_only = LocalOnly {
        plain: false,
        groups: vec!["$share/h/a/#"],
    };
    router.route_within("a/b", None, |_| true, &groups_only, &mut out);
    let keys: Vec<u32> = out.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec![6]);
}
