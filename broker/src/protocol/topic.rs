//! Topic names and filters: validation, shared-subscription parsing, matching.
//!
//! Rules from OASIS MQTT 5.0 section 4.7 (identical in 3.1.1 section 4.7) and
//! shared subscriptions from MQTT 5.0 section 4.8.2.

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("{}", self.describe())]
    Empty,
    #[error("{}", self.describe())]
    Nul,
    #[error("{}", self.describe())]
    WildcardInName,
    #[error("{}", self.describe())]
    MisplacedMultiLevel,
    #[error("{}", self.describe())]
    MisplacedSingleLevel,
    #[error("{}", self.describe())]
    InvalidShared,
}

impl TopicError {
    /// A fixed description (also the `Display` text), for errors that carry a
    /// `&'static str` such as the decoder's.
    pub fn describe(&self) -> &'static str {
        match self {
            TopicError::Empty => "topic is empty",
            TopicError::Nul => "topic contains a NUL character",
            TopicError::WildcardInName => "topic name contains a wildcard",
            TopicError::MisplacedMultiLevel => "'#' must be the last level and stand alone",
            TopicError::MisplacedSingleLevel => "'+' must stand alone in its level",
            TopicError::InvalidShared => "shared subscription must be $share/<group>/<filter>",
        }
    }
}

/// A `$share/<group>/<filter>` subscription, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    pub group: &'a str,
    pub filter: &'a str,
}

/// The prefix that marks a shared subscription.
pub(super) const SHARE_PREFIX: &str = "$share/";

/// Checks a topic name a client publishes to: non-empty, no wildcards, no NUL.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    for byte in topic.bytes() {
        match byte {
            0 => return Err(TopicError::Nul),
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a subscription filter (including the `$share/` form).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    match parse_shared(filter)? {
        Some(shared) => validate_plain_filter(shared.filter),
        None => validate_plain_filter(filter),
    }
}

/// Checks an ordinary (non-shared) filter: `#` only as the whole last level,
/// `+` only as a whole level.
fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.as_bytes().contains(&0) {
        return Err(TopicError::Nul);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevel);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevel);
        }
    }
    Ok(())
}

/// Splits `$share/<group>/<filter>`; `Ok(None)` for an ordinary filter.
///
/// The group must be non-empty and free of `/`, `+` and `#`, and a filter must
/// follow it; the filter itself is checked by [`validate_topic_filter`].
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let (group, filter) = rest.split_once('/').ok_or(TopicError::InvalidShared)?;
    if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
        return Err(TopicError::InvalidShared);
    }
    Ok(Some(SharedFilter { group, filter }))
}

/// Whether `topic` matches `filter` (`+`, `#`; a topic starting with `$` never
/// matches a filter starting with a wildcard).
///
/// `filter` is an ordinary filter: strip a `$share/<group>/` prefix with
/// [`parse_shared`] first. Allocation-free: it walks both strings level by level.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` also matches the parent level: `sport/#` matches `sport`.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The filter matching exactly the topics both valid filters `a` and `b`
/// match, or `None` when no topic matches both: `t/+/x` and `t/a/#` give
/// `t/a/x`; `a/#` and `a` give `a` (`#` matches the parent level too).
/// Neither may be a `$share/` filter.
pub fn intersection(a: &str, b: &str) -> Option<String> {
    // A filter starting with a wildcard matches no `$` topic.
    let dollar = |f: &str| f.starts_with('$');
    let wild = |f: &str| f.starts_with(['+', '#']);
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (None, None) => break,
            (Some("#"), level) => {
                out.extend(level);
                out.extend(b_levels);
                break;
            }
            (level, Some("#")) => {
                out.extend(level);
                out.extend(a_levels);
                break;
            }
            (Some("+"), Some(level)) | (Some(level), Some("+")) => out.push(level),
            (Some(x), Some(y)) if x == y => out.push(x),
            _ => return None,
        }
    }
    Some(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersections_are_the_topics_both_filters_match() {
        assert_eq!(intersection("t/+/x", "t/a/#").as_deref(), Some("t/a/x"));
        assert_eq!(intersection("t/a/#", "t/+/x").as_deref(), Some("t/a/x"));
        assert_eq!(intersection("#", "a/b").as_deref(), Some("a/b"));
        assert_eq!(intersection("a/#", "a").as_deref(), Some("a"));
        assert_eq!(intersection("a/#", "a/#").as_deref(), Some("a/#"));
        assert_eq!(intersection("a/#", "+/b/#").as_deref(), Some("a/b/#"));
        assert_eq!(intersection("+/+", "a/+").as_deref(), Some("a/+"));
        assert_eq!(intersection("a/b", "a/b").as_deref(), Some("a/b"));
        assert_eq!(intersection("$SYS/#", "$SYS/x").as_deref(), Some("$SYS/x"));
        assert_eq!(intersection("a/b", "a/c"), None);
        assert_eq!(intersection("a/+", "a"), None);
        assert_eq!(intersection("a/+", "a/b/c"), None);
        assert_eq!(intersection("#", "$SYS/x"), None);
        assert_eq!(intersection("+/x", "$SYS/x"), None);
        // Brute force: the intersection matches exactly the topics both match.
        let filters = ["#", "a/#", "a/+", "+/b", "a/b", "+/+/c", "a/+/#", "+", "a"];
        let topics = [
            "a", "b", "a/b", "a/c", "x/b", "a/b/c", "a/x/c", "a/b/d", "", "a/",
        ];
        for a in filters {
            for b in filters {
                let both = intersection(a, b);
                for topic in topics {
                    let expected = matches(a, topic) && matches(b, topic);
                    let got = both.as_deref().is_some_and(|f| matches(f, topic));
                    assert_eq!(got, expected, "{a} ∩ {b} on {topic:?}: {both:?}");
                }
            }
        }
    }

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("sport/tennis"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/broker"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(
            validate_topic_name("sport/+"),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(
            validate_topic_name("sport#"),
            Err(TopicError::WildcardInName)
        );
    }

    #[test]
    fn valid_filters() {
        for filter in [
            "#",
            "+",
            "/",
            "sport/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "+/tennis/#",
            "$SYS/#",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn invalid_filters() {
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("a/\0"), Err(TopicError::Nul));
        assert_eq!(
            validate_topic_filter("sport/tennis#"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(
            validate_topic_filter("sport/#/ranking"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(
            validate_topic_filter("sport+"),
            Err(TopicError::MisplacedSingleLevel)
        );
        assert_eq!(
            validate_topic_filter("sport/+x/a"),
            Err(TopicError::MisplacedSingleLevel)
        );
    }

    #[test]
    fn shared_filters_are_split() {
        assert_eq!(
            parse_shared("$share/group/sport/#"),
            Ok(Some(SharedFilter {
                group: "group",
                filter: "sport/#"
            }))
        );
        assert_eq!(parse_shared("sport/#"), Ok(None));
        assert_eq!(parse_shared("$sharefoo/x"), Ok(None));
        assert_eq!(validate_topic_filter("$share/g/+/x"), Ok(()));
    }

    #[test]
    fn invalid_shared_filters() {
        for filter in [
            "$share/",
            "$share/group",
            "$share//x",
            "$share/g+/x",
            "$share/g#/x",
            "$share/group/",
        ] {
            assert_eq!(
                parse_shared(filter),
                Err(TopicError::InvalidShared),
                "{filter}"
            );
            assert_eq!(
                validate_topic_filter(filter),
                Err(TopicError::InvalidShared),
                "{filter}"
            );
        }
        assert_eq!(
            validate_topic_filter("$share/g/a#"),
            Err(TopicError::MisplacedMultiLevel)
        );
    }

    #[test]
    fn spec_matching_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+", "finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/bc"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_do_not_match_leading_wildcards() {
        assert!(!matches("#", "$SYS/broker/clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/broker/clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }
}
