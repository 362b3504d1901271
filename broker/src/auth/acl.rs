//! Access rules: which topic filters a user may publish and subscribe to.
//!
//! A rule applies to one username, or to everyone with user `*`, and allows or
//! denies its filters. Rules are read in order and the first that decides wins
//! (as mosquitto and EMQX users expect); when none decides, access is denied.
//! - A publish is decided by the first applicable rule with a publish filter
//!   matching the topic.
//! - A subscription is granted by the first allow rule with a filter that
//!   *covers* it (matches every topic the subscription could ever deliver), and
//!   refused by a deny rule met before it whose filter covers it. A deny filter
//!   that only overlaps the subscription (`#` against a denied `secret/#`) does
//!   not refuse it: the topics it denies are filtered out at delivery instead
//!   ([`Acl::can_receive`]), as mosquitto does.
//!
//! `%u` and `%c` in a rule stand for the username and client id; a value that
//! would change the rule's shape (it holds `/`, `+`, `#`, or starts with `$`)
//! makes the rule not apply, so a crafted username cannot widen its own access.
//!
//! Topics are matched and validated by `protocol::topic`, the same code the
//! router uses, so what the ACL allows and what the router delivers cannot
//! disagree.

use std::borrow::Cow;

use crate::config::{AclRule, Permission};
use crate::protocol::topic::{matches, parse_shared, validate_topic_filter, validate_topic_name};

/// Compiled access rules. Without rules, everything is allowed.
#[derive(Debug, Clone)]
pub struct Acl {
    /// `None` when the configuration has no rules at all: everything is allowed.
    rules: Option<Vec<Rule>>,
    /// Some rule denies subscribe filters (see [`Acl::filters_deliveries`]).
    denies_reads: bool,
}

/// One rule with its malformed filters removed.
#[derive(Debug, Clone)]
struct Rule {
    /// `None` for `*`.
    user: Option<String>,
    permission: Permission,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Rule {
    fn applies_to(&self, username: Option<&str>) -> bool {
        match (&self.user, username) {
            (None, _) => true,
            (Some(user), Some(username)) => user == username,
            (Some(_), None) => false,
        }
    }
}

impl Acl {
    /// Compiles `rules`. A rule filter that is not a valid MQTT topic filter can
    /// never match, so it is dropped with a warning (failing closed).
    pub fn new(rules: &[AclRule]) -> Acl {
        if rules.is_empty() {
            return Acl {
                rules: None,
                denies_reads: false,
            };
        }
        let keep_valid = |user: &str, filters: &[String]| -> Vec<String> {
            filters
                .iter()
                .filter(|filter| {
                    let valid = is_valid_filter(filter);
                    if !valid {
                        tracing::warn!(user, filter = %filter, "ignoring malformed ACL filter");
                    }
                    valid
                })
                .cloned()
                .collect()
        };
        let compiled: Vec<Rule> = rules
            .iter()
            .map(|rule| Rule {
                user: (rule.user != "*").then(|| rule.user.clone()),
                permission: rule.permission,
                publish: keep_valid(&rule.user, &rule.publish),
                subscribe: keep_valid(&rule.user, &rule.subscribe),
            })
            .collect();
        let denies_reads = compiled
            .iter()
            .any(|rule| rule.permission == Permission::Deny && !rule.subscribe.is_empty());
        Acl {
            rules: Some(compiled),
            denies_reads,
        }
    }

    /// Whether `username` (connected as `client_id`) may publish to `topic`.
    pub fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        if !is_valid_topic(topic) {
            return false;
        }
        first_decision_allows(
            rules,
            username,
            client_id,
            |rule| &rule.publish,
            |f| matches(f, topic),
        )
    }

    /// Whether `username` may subscribe to `filter` (every topic it matches must be allowed).
    /// For a shared subscription `$share/<group>/<filter>` the inner filter is checked.
    pub fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let Some(filter) = strip_share(filter) else {
            return false;
        };
        if !is_valid_filter(filter) {
            return false;
        }
        first_decision_allows(
            rules,
            username,
            client_id,
            |rule| &rule.subscribe,
            |f| covers(f, filter),
        )
    }

    /// Whether a message on `topic` may be delivered to `username` through a
    /// subscription it was granted: the first applicable rule with a subscribe
    /// filter matching the topic decides. Only deny rules can make this
    /// differ from the subscription's own check ([`Acl::filters_deliveries`]).
    pub fn can_receive(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        first_decision_allows(
            rules,
            username,
            client_id,
            |rule| &rule.subscribe,
            |f| matches(f, topic),
        )
    }

    /// Whether some rule denies subscribe filters, so deliveries must be
    /// checked with [`Acl::can_receive`]; false keeps delivery free of ACL work.
    pub fn filters_deliveries(&self) -> bool {
        self.denies_reads
    }
}

/// Whether the first of `username`'s applicable filters (from `pick`, in rule
/// order) for which `decides` holds belongs to an allow rule; when none
/// decides, access is denied.
fn first_decision_allows<'a>(
    rules: &'a [Rule],
    username: Option<&'a str>,
    client_id: &'a str,
    pick: impl Fn(&'a Rule) -> &'a Vec<String> + 'a,
    decides: impl Fn(&str) -> bool,
) -> bool {
    applicable_filters(rules, username, client_id, pick)
        .find(|(_, filter)| decides(filter))
        .is_some_and(|(permission, _)| permission == Permission::Allow)
}

/// The filters of every rule that applies to `username`, in rule order, with
/// their permission and `%u`/`%c` filled in; filters whose substitution is
/// impossible are skipped.
fn applicable_filters<'a>(
    rules: &'a [Rule],
    username: Option<&'a str>,
    client_id: &'a str,
    pick: impl Fn(&'a Rule) -> &'a Vec<String> + 'a,
) -> impl Iterator<Item = (Permission, Cow<'a, str>)> + 'a {
    rules
        .iter()
        .filter(move |rule| rule.applies_to(username))
        .flat_map(move |rule| pick(rule).iter().map(|f| (rule.permission, f)))
        .filter_map(move |(permission, template)| {
            substitute(template, username, client_id).map(|f| (permission, f))
        })
}

/// Fills `%u` and `%c` into `template` in one pass (so a value is never itself
/// expanded). `None` when a needed value is missing or unsafe to substitute.
fn substitute<'a>(
    template: &'a str,
    username: Option<&str>,
    client_id: &str,
) -> Option<Cow<'a, str>> {
    if !template.contains('%') {
        return Some(Cow::Borrowed(template));
    }
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut lookahead = chars.clone();
        let value = match lookahead.next() {
            Some('u') => Some(safe_value(username?)?),
            Some('c') => Some(safe_value(client_id)?),
            _ => None,
        };
        match value {
            Some(value) => {
                out.push_str(value);
                chars = lookahead;
            }
            None => out.push('%'),
        }
    }
    Some(Cow::Owned(out))
}

/// A username or client id that can stand for exactly one literal topic level.
fn safe_value(value: &str) -> Option<&str> {
    let unsafe_char = |c: char| matches!(c, '/' | '+' | '#' | '\0');
    (!value.is_empty() && !value.starts_with('$') && !value.contains(unsafe_char)).then_some(value)
}

/// The filter inside `$share/<group>/<filter>`, or `filter` itself when not shared.
/// `None` for a malformed shared subscription.
fn strip_share(filter: &str) -> Option<&str> {
    match parse_shared(filter) {
        Ok(Some(shared)) => Some(shared.filter),
        Ok(None) => Some(filter),
        Err(_) => None,
    }
}

/// A topic name a client may publish to: non-empty, no wildcards.
fn is_valid_topic(topic: &str) -> bool {
    validate_topic_name(topic).is_ok()
}

/// A plain topic filter (not `$share/`): `+` only as a whole level, `#` only as the whole last level.
fn is_valid_filter(filter: &str) -> bool {
    !filter.starts_with("$share/") && validate_topic_filter(filter).is_ok()
}

/// Whether the valid rule filter `rule` matches every topic that the valid filter
/// `filter` matches, so that subscribing to `filter` delivers nothing `rule`
/// does not allow. `a/#` covers `a/+/b`; `a/+` does not cover `a/#`.
fn covers(rule: &str, filter: &str) -> bool {
    // A rule starting with a wildcard matches no `$` topic, while a filter
    // starting with `$` matches only those.
    if rule.starts_with(['+', '#']) && filter.starts_with('$') {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            // `#` matches any rest, the parent level included.
            (Some("#"), _) => return true,
            (None, None) => return true,
            // Any level the filter accepts at this depth, `+` accepts too.
            (Some("+"), Some(f)) if f != "#" => {}
            (Some(r), Some(f)) if r == f && f != "+" && f != "#" => {}
            // Depth mismatch, a filter wildcard the rule does not match, or different literals.
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(user: &str, publish: &[&str], subscribe: &[&str]) -> AclRule {
        AclRule {
            user: user.into(),
            permission: Permission::Allow,
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn matches_follows_mqtt_wildcard_rules() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a/+", "a/b"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/+", "a"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn covers_is_subset_of_matched_topics() {
        assert!(covers("a/#", "a/+/b"));
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/b/#"));
        assert!(covers("#", "+/b/#"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(covers("a/+/#", "a/+"));
        assert!(covers("a/b", "a/b"));

        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a"));
        assert!(!covers("a/+/#", "a/#"), "a/# also matches `a` itself");
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("a/b/c", "a/b"));
        assert!(!covers("a/b", "a/#"));
        assert!(!covers("a/+", "b/c"));
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
    }

    #[test]
    fn filter_and_topic_validation() {
        assert!(is_valid_filter("a/+/#"));
        assert!(is_valid_filter("#"));
        assert!(!is_valid_filter("a/#/b"));
        assert!(!is_valid_filter("a/b+"));
        assert!(!is_valid_filter("a#"));
        assert!(!is_valid_filter(""));
        assert!(is_valid_topic("a/b"));
        assert!(!is_valid_topic("a/+"));
        assert!(!is_valid_topic(""));
    }

    #[test]
    fn no_rules_allow_everything() {
        let acl = Acl::new(&[]);
        assert!(acl.can_publish(None, "c", "any/topic"));
        assert!(acl.can_subscribe(Some("u"), "c", "#"));
    }

    #[test]
    fn rules_apply_to_their_user_and_to_star() {
        let acl = Acl::new(&[
            rule("alice", &["alice/out/#"], &["alice/in/#"]),
            rule("*", &["public/+"], &["public/#"]),
        ]);
        assert!(acl.can_publish(Some("alice"), "c1", "alice/out/x"));
        assert!(acl.can_publish(Some("alice"), "c1", "public/x"));
        assert!(!acl.can_publish(Some("bob"), "c2", "alice/out/x"));
        assert!(acl.can_publish(Some("bob"), "c2", "public/x"));
        assert!(acl.can_publish(None, "c3", "public/x"));
        assert!(!acl.can_publish(None, "c3", "public/x/y"));
        assert!(
            !acl.can_publish(Some("alice"), "c1", "alice/in/x"),
            "publish and subscribe lists are separate"
        );

        assert!(acl.can_subscribe(Some("alice"), "c1", "alice/in/+"));
        assert!(acl.can_subscribe(Some("alice"), "c1", "public/#"));
        assert!(!acl.can_subscribe(Some("bob"), "c2", "alice/in/#"));
        assert!(!acl.can_subscribe(Some("alice"), "c1", "#"));
    }

    #[test]
    fn percent_u_is_the_username_and_never_matches_anonymous() {
        let acl = Acl::new(&[rule("*", &["users/%u/#"], &["users/%u/+"])]);
        assert!(acl.can_publish(Some("alice"), "c", "users/alice/x"));
        assert!(!acl.can_publish(Some("alice"), "c", "users/bob/x"));
        assert!(!acl.can_publish(None, "c", "users//x"));
        assert!(!acl.can_publish(None, "c", "users/%u/x"));
        assert!(acl.can_subscribe(Some("bob"), "c", "users/bob/+"));
        assert!(!acl.can_subscribe(Some("bob"), "c", "users/bob/#"));
        assert!(!acl.can_subscribe(None, "c", "users/+/+"));
    }

    #[test]
    fn percent_c_is_the_client_id() {
        let acl = Acl::new(&[rule("*", &["devices/%c/telemetry"], &["devices/%c/cmd/#"])]);
        assert!(acl.can_publish(None, "dev-1", "devices/dev-1/telemetry"));
        assert!(!acl.can_publish(None, "dev-1", "devices/dev-2/telemetry"));
        assert!(acl.can_subscribe(Some("x"), "dev-1", "devices/dev-1/cmd/+"));
        assert!(!acl.can_subscribe(Some("x"), "dev-1", "devices/+/cmd/#"));
    }

    #[test]
    fn substitution_is_single_pass_and_keeps_other_percents() {
        assert_eq!(
            substitute("a/%u/%c/50%", Some("%c"), "cid").as_deref(),
            Some("a/%c/cid/50%")
        );
        assert_eq!(substitute("a/%x", None, "cid").as_deref(), Some("a/%x"));
    }

    #[test]
    fn wildcards_or_separators_in_names_cannot_widen_access() {
        let acl = Acl::new(&[rule("*", &["users/%u/#", "devices/%c"], &["users/%u/#"])]);
        // A username `#` would otherwise turn the rule into `users/#/#`.
        assert!(!acl.can_publish(Some("#"), "c", "users/bob/x"));
        assert!(!acl.can_subscribe(Some("#"), "c", "users/#"));
        assert!(!acl.can_subscribe(Some("+"), "c", "users/+/#"));
        assert!(!acl.can_publish(Some("bob/x"), "c", "users/bob/x/y"));
        assert!(!acl.can_publish(None, "a/b", "devices/a/b"));
        assert!(!acl.can_publish(None, "+", "devices/x"));
        assert!(!acl.can_publish(None, "", "devices/"));

        let acl = Acl::new(&[rule("*", &["%u/#"], &[])]);
        assert!(!acl.can_publish(Some("$SYS"), "c", "$SYS/broker/uptime"));
        assert!(acl.can_publish(Some("alice"), "c", "alice/x"));
    }

    #[test]
    fn shared_subscriptions_check_the_inner_filter() {
        let acl = Acl::new(&[rule("*", &[], &["jobs/#"])]);
        assert!(acl.can_subscribe(None, "c", "$share/workers/jobs/+"));
        assert!(!acl.can_subscribe(None, "c", "$share/workers/other/+"));
        assert!(!acl.can_subscribe(None, "c", "$share/workers/#"));
        assert!(!acl.can_subscribe(None, "c", "$share/workers"));
        assert!(!acl.can_subscribe(None, "c", "$share//jobs/x"));
    }

    #[test]
    fn malformed_rule_filters_never_match() {
        let acl = Acl::new(&[rule("*", &["a/#/b", "ok/+"], &["x+/#"])]);
        assert!(!acl.can_publish(None, "c", "a/x/b"));
        assert!(acl.can_publish(None, "c", "ok/1"));
        assert!(!acl.can_subscribe(None, "c", "x+/y"));
    }

    #[test]
    fn wildcard_topics_cannot_be_published() {
        let acl = Acl::new(&[rule("*", &["#"], &[])]);
        assert!(acl.can_publish(None, "c", "a/b"));
        assert!(!acl.can_publish(None, "c", "a/+"));
        assert!(!acl.can_publish(None, "c", "$SYS/x"));
    }

    fn deny(user: &str, publish: &[&str], subscribe: &[&str]) -> AclRule {
        AclRule {
            permission: Permission::Deny,
            ..rule(user, publish, subscribe)
        }
    }

    #[test]
    fn the_first_rule_that_matches_decides() {
        let acl = Acl::new(&[
            deny(
                "*",
                &["test/nosubscribe", "secret/#"],
                &["test/nosubscribe", "secret/#"],
            ),
            rule("*", &["#"], &["#"]),
        ]);
        assert!(!acl.can_publish(None, "c", "secret/x"));
        assert!(!acl.can_publish(None, "c", "test/nosubscribe"));
        assert!(acl.can_publish(None, "c", "test/other"));
        assert!(!acl.can_subscribe(None, "c", "test/nosubscribe"));
        assert!(!acl.can_subscribe(None, "c", "secret/+/x"));
        assert!(!acl.can_subscribe(None, "c", "$share/g/secret/#"));
        assert!(
            acl.can_subscribe(None, "c", "test/+"),
            "overlap alone does not refuse"
        );
        assert!(acl.can_subscribe(None, "c", "#"));
        assert!(!acl.can_receive(None, "c", "secret/x"));
        assert!(!acl.can_receive(None, "c", "test/nosubscribe"));
        assert!(acl.can_receive(None, "c", "test/other"));
        assert!(acl.filters_deliveries());

        // An allow rule before the deny wins for what it covers.
        let acl = Acl::new(&[
            rule("admin", &["#"], &["#"]),
            deny("*", &["secret/#"], &["secret/#"]),
            rule("*", &["#"], &["#"]),
        ]);
        assert!(acl.can_publish(Some("admin"), "c", "secret/x"));
        assert!(acl.can_receive(Some("admin"), "c", "secret/x"));
        assert!(!acl.can_publish(Some("guest"), "c", "secret/x"));
        assert!(!acl.can_receive(Some("guest"), "c", "secret/x"));
    }

    #[test]
    fn allow_rules_alone_never_filter_deliveries() {
        let acl = Acl::new(&[rule("*", &["#"], &["#"]), deny("*", &["x"], &[])]);
        assert!(!acl.filters_deliveries());
        assert!(!Acl::new(&[]).filters_deliveries());
    }

    #[test]
    fn a_named_rule_with_no_rule_for_others_denies_them() {
        let acl = Acl::new(&[rule("admin", &["#"], &["#"])]);
        assert!(acl.can_publish(Some("admin"), "c", "x"));
        assert!(!acl.can_publish(Some("guest"), "c", "x"));
        assert!(!acl.can_subscribe(None, "c", "x"));
    }
}
