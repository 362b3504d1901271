//! Topic names and filters: validation, shared-subscription parsing, matching.

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic contains a NUL character")]
    Nul,
    #[error("topic name contains a wildcard")]
    WildcardInName,
    #[error("'#' must be the last level and stand alone")]
    MisplacedMultiLevel,
    #[error("'+' must stand alone in its level")]
    MisplacedSingleLevel,
    #[error("shared subscription must be $share/<group>/<filter>")]
    InvalidShared,
}

/// A `$share/<group>/<filter>` subscription, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    pub group: &'a str,
    pub filter: &'a str,
}

/// Checks a topic name a client publishes to: non-empty, no wildcards, no NUL.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    let _ = topic;
    todo!("codec")
}

/// Checks a subscription filter (including the `$share/` form).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    let _ = filter;
    todo!("codec")
}

/// Splits `$share/<group>/<filter>`; `Ok(None)` for an ordinary filter.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let _ = filter;
    todo!("codec")
}

/// Whether `topic` matches `filter` (`+`, `#`; a topic starting with `$` never
/// matches a filter starting with a wildcard).
pub fn matches(filter: &str, topic: &str) -> bool {
    let _ = (filter, topic);
    todo!("codec")
}
