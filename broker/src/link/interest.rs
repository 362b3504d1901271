//! Which clusters want which topics, and over which link each is reached.
//!
//! Pure bookkeeping, tested without sockets. Each cluster advertises to each
//! link its own subscribers' filters intersected with what it imports over
//! that link (it wants nothing else from there), and re-advertises what it
//! learned over its other links, each with the path it came along, so a
//! chain or a ring of clusters forms one namespace. An advertisement is
//! refused by a cluster already on its path, and ends at its hop limit.
//!
//! Messages are addressed: the publishing cluster finds every cluster whose
//! interest matches, picks one link per destination (the shortest path, then
//! the link's name), and sends one copy per link naming the destinations it
//! carries. A cluster on the way forwards each destination by its own best
//! link. Every interested cluster thus gets one copy, in a triangle or a
//! ring too; a message whose path already holds a cluster never enters it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::LinkConfig;
use crate::protocol::topic;
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::router::Router;

use super::wire::LinkOp;

/// Who wants a filter: a cluster, by name.
type Origin = Arc<str>;

/// Why an advertisement was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the advertisement's path already holds this cluster")]
    Loop,
    #[error("the advertisement crossed more than the link's hop limit")]
    TooManyHops,
    #[error("the advertisement's path does not start at its origin and end at the link's cluster")]
    BadPath,
    #[error("the filter is not a valid topic filter")]
    BadFilter,
    #[error("no link to that cluster is configured")]
    UnknownLink,
}

/// What a contribution to an advertisement came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Source {
    /// A filter of this cluster's own subscribers.
    Own(String),
    /// An advertisement learned over another link.
    Learned {
        link: String,
        origin: String,
        filter: String,
    },
}

/// An advertisement a link's remote made, as this side keeps it.
#[derive(Debug, Clone)]
struct Learned {
    path: Vec<String>,
    /// The filter narrowed to each export filter (what may be sent for it).
    effective: Vec<String>,
}

/// One link's view.
#[derive(Debug)]
struct LinkTable {
    config: LinkConfig,
    /// What the remote advertised, by (origin, filter).
    learned: HashMap<(String, String), Learned>,
    /// The effective filters of `learned`, keyed by origin, for matching.
    router: Router<Origin>,
    /// How many learned entries hold each (origin, effective filter).
    effective_count: HashMap<(Origin, String), usize>,
    /// Path lengths of each origin's learned entries (length -> count).
    distance: HashMap<Origin, BTreeMap<usize, usize>>,
    /// What this side advertises to the remote: by (origin, filter), every
    /// contribution and its path; the shortest one is what was sent.
    adverts: HashMap<(String, String), BTreeMap<Source, Vec<String>>>,
}

impl LinkTable {
    fn new(config: LinkConfig) -> LinkTable {
        LinkTable {
            config,
            learned: HashMap::new(),
            router: Router::new(),
            effective_count: HashMap::new(),
            distance: HashMap::new(),
            adverts: HashMap::new(),
        }
    }

    fn exports(&self, topic_name: &str) -> bool {
        self.config
            .export
            .iter()
            .any(|f| topic::matches(f, topic_name))
    }

    fn distance_to(&self, origin: &str) -> Option<usize> {
        self.distance.get(origin)?.keys().next().copied()
    }
}

/// Options for a router entry (the router wants them; only matching is used).
const MATCH_ONLY: SubscriptionOptions = SubscriptionOptions {
    qos: QoS::ExactlyOnce,
    no_local: false,
    retain_as_published: true,
    retain_handling: RetainHandling::DoNotSend,
};

/// The interest table of this cluster's links.
#[derive(Debug)]
pub struct Interest {
    me: String,
    /// This cluster's own subscription filters (shared ones as plain), counted.
    own: HashMap<String, usize>,
    links: BTreeMap<String, LinkTable>,
}

/// Ops to queue, per link.
pub type Outgoing = Vec<(String, LinkOp)>;

/// Where one message goes: per link, the destinations it carries there.
pub type Routes = Vec<(String, Vec<String>)>;

impl Interest {
    pub fn new(me: &str) -> Interest {
        Interest {
            me: me.to_owned(),
            own: HashMap::new(),
            links: BTreeMap::new(),
        }
    }

    /// Replaces the link set: links that stay keep what they learned; a link
    /// whose filters changed is re-advertised in full (its remote gets
    /// [`Interest::snapshot`]). Returns the names whose adverts must be resent.
    pub fn set_links(&mut self, configs: &[LinkConfig]) -> (Vec<String>, Outgoing) {
        let mut out = Vec::new();
        let removed: Vec<String> = self
            .links
            .keys()
            .filter(|name| !configs.iter().any(|c| &c.name == *name))
            .cloned()
            .collect();
        for name in removed {
            self.forget_link(&name, &mut out);
            self.links.remove(&name);
        }
        let mut resend = Vec::new();
        for config in configs {
            match self.links.get_mut(&config.name) {
                Some(table) if table.config == *config => {}
                Some(table) => {
                    let filters_changed = table.config.export != config.export
                        || table.config.import != config.import;
                    table.config = config.clone();
                    if filters_changed {
                        // Simplest correct: relearn nothing, re-derive everything.
                        let learned: Vec<_> = table.learned.drain().collect();
                        table.router = Router::new();
                        table.effective_count.clear();
                        table.distance.clear();
                        let name = config.name.clone();
                        for ((origin, filter), entry) in learned {
                            self.forget_relays(&name, &origin, &filter, &mut out);
                            let _ = self.learn_entry(&name, &origin, &filter, entry.path, &mut out);
                        }
                        resend.push(config.name.clone());
                    }
                }
                None => {
                    self.links
                        .insert(config.name.clone(), LinkTable::new(config.clone()));
                    resend.push(config.name.clone());
                }
            }
        }
        for name in &resend {
            self.rebuild_adverts(name);
        }
        out.retain(|(link, _)| !resend.contains(link));
        (resend, out)
    }

    /// The full advertisement for `link`, after its remote forgot this side's
    /// stream (or the link's filters changed): a reset, then every advert.
    pub fn snapshot(&self, link: &str) -> Vec<LinkOp> {
        let mut ops = vec![LinkOp::Reset];
        if let Some(table) = self.links.get(link) {
            for ((origin, filter), sources) in &table.adverts {
                if let Some(path) = shortest(sources) {
                    ops.push(LinkOp::Interest {
                        origin: origin.clone(),
                        filter: filter.clone(),
                        path: path.clone(),
                    });
                }
            }
        }
        ops
    }

    /// A subscription filter gained its first subscriber here.
    pub fn own_added(&mut self, filter: &str) -> Outgoing {
        let filter = plain(filter);
        let count = self.own.entry(filter.to_owned()).or_insert(0);
        *count += 1;
        let mut out = Vec::new();
        if *count == 1 {
            let path = vec![self.me.clone()];
            let names: Vec<String> = self.links.keys().cloned().collect();
            for name in names {
                self.contribute(
                    &name,
                    &self.me.clone(),
                    filter,
                    Source::Own(filter.to_owned()),
                    &path,
                    &mut out,
                );
            }
        }
        out
    }

    /// A subscription filter lost its last subscriber here.
    pub fn own_removed(&mut self, filter: &str) -> Outgoing {
        let filter = plain(filter);
        let mut out = Vec::new();
        let Some(count) = self.own.get_mut(filter) else {
            return out;
        };
        *count -= 1;
        if *count == 0 {
            self.own.remove(filter);
            let names: Vec<String> = self.links.keys().cloned().collect();
            for name in names {
                self.withdraw(
                    &name,
                    &self.me.clone(),
                    filter,
                    &Source::Own(filter.to_owned()),
                    &mut out,
                );
            }
        }
        out
    }

    /// The remote of `link` advertised `origin`'s `filter` along `path`.
    /// Returns the filters matching messages may now be sent for (retained
    /// messages among them go at once), and what to re-advertise elsewhere.
    pub fn learn(
        &mut self,
        link: &str,
        origin: &str,
        filter: &str,
        path: Vec<String>,
    ) -> Result<(Vec<String>, Outgoing), Refusal> {
        let table = self.links.get(link).ok_or(Refusal::UnknownLink)?;
        if path.contains(&self.me) || origin == self.me {
            return Err(Refusal::Loop);
        }
        if path.len() > usize::from(table.config.max_hops) {
            return Err(Refusal::TooManyHops);
        }
        if path.first().map(String::as_str) != Some(origin)
            || path.last().map(String::as_str) != Some(link)
        {
            return Err(Refusal::BadPath);
        }
        if topic::validate_topic_filter(filter).is_err() || filter.starts_with("$share/") {
            return Err(Refusal::BadFilter);
        }
        let mut out = Vec::new();
        // A replaced advertisement (a new path) is withdrawn first.
        if self.links[link]
            .learned
            .contains_key(&(origin.to_owned(), filter.to_owned()))
        {
            self.forget_entry(link, origin, filter, &mut out);
        }
        let effective = self.learn_entry(link, origin, filter, path, &mut out)?;
        Ok((effective, out))
    }

    fn learn_entry(
        &mut self,
        link: &str,
        origin: &str,
        filter: &str,
        path: Vec<String>,
        out: &mut Outgoing,
    ) -> Result<Vec<String>, Refusal> {
        let table = self.links.get_mut(link).ok_or(Refusal::UnknownLink)?;
        let effective = narrowed(&table.config.export, filter);
        let key: Origin = Arc::from(origin);
        for eff in &effective {
            let count = table
                .effective_count
                .entry((key.clone(), eff.clone()))
                .or_insert(0);
            *count += 1;
            if *count == 1 {
                table.router.subscribe(key.clone(), eff, MATCH_ONLY, None);
            }
        }
        *table
            .distance
            .entry(key)
            .or_default()
            .entry(path.len())
            .or_insert(0) += 1;
        table.learned.insert(
            (origin.to_owned(), filter.to_owned()),
            Learned {
                path: path.clone(),
                effective: effective.clone(),
            },
        );
        // Re-advertise over the other links, with this cluster on the path.
        let mut relayed = path;
        relayed.push(self.me.clone());
        let source = Source::Learned {
            link: link.to_owned(),
            origin: origin.to_owned(),
            filter: filter.to_owned(),
        };
        let others: Vec<String> = self
            .links
            .iter()
            .filter(|(name, table)| {
                name.as_str() != link
                    && !relayed.contains(name)
                    && relayed.len() < usize::from(table.config.max_hops)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for other in others {
            self.contribute(&other, origin, filter, source.clone(), &relayed, out);
        }
        Ok(effective)
    }

    /// The remote of `link` withdrew `origin`'s `filter`.
    pub fn forget(&mut self, link: &str, origin: &str, filter: &str) -> Outgoing {
        let mut out = Vec::new();
        self.forget_entry(link, origin, filter, &mut out);
        out
    }

    /// The remote of `link` reset its advertisements (or they expired).
    pub fn forget_link(&mut self, link: &str, out: &mut Outgoing) {
        let keys: Vec<(String, String)> = match self.links.get(link) {
            Some(table) => table.learned.keys().cloned().collect(),
            None => return,
        };
        for (origin, filter) in keys {
            self.forget_entry(link, &origin, &filter, out);
        }
    }

    fn forget_entry(&mut self, link: &str, origin: &str, filter: &str, out: &mut Outgoing) {
        let Some(table) = self.links.get_mut(link) else {
            return;
        };
        let Some(entry) = table
            .learned
            .remove(&(origin.to_owned(), filter.to_owned()))
        else {
            return;
        };
        let key: Origin = Arc::from(origin);
        for eff in &entry.effective {
            let slot = (key.clone(), eff.clone());
            if let Some(count) = table.effective_count.get_mut(&slot) {
                *count -= 1;
                if *count == 0 {
                    table.effective_count.remove(&slot);
                    table.router.unsubscribe(&key, eff);
                }
            }
        }
        if let Some(lengths) = table.distance.get_mut(&key) {
            if let Some(count) = lengths.get_mut(&entry.path.len()) {
                *count -= 1;
                if *count == 0 {
                    lengths.remove(&entry.path.len());
                }
            }
            if lengths.is_empty() {
                table.distance.remove(&key);
            }
        }
        self.forget_relays(link, origin, filter, out);
    }

    fn forget_relays(&mut self, link: &str, origin: &str, filter: &str, out: &mut Outgoing) {
        let source = Source::Learned {
            link: link.to_owned(),
            origin: origin.to_owned(),
            filter: filter.to_owned(),
        };
        let names: Vec<String> = self
            .links
            .keys()
            .filter(|n| n.as_str() != link)
            .cloned()
            .collect();
        for name in names {
            self.withdraw(&name, origin, filter, &source, out);
        }
    }

    /// Adds `source`'s contribution to what `link` is told about `origin`'s
    /// `filter` (narrowed to the link's import filters).
    fn contribute(
        &mut self,
        link: &str,
        origin: &str,
        filter: &str,
        source: Source,
        path: &[String],
        out: &mut Outgoing,
    ) {
        let Some(table) = self.links.get_mut(link) else {
            return;
        };
        for advertised in narrowed(&table.config.import, filter) {
            let sources = table
                .adverts
                .entry((origin.to_owned(), advertised.clone()))
                .or_default();
            let before = shortest(sources).cloned();
            sources.insert(source.clone(), path.to_vec());
            let after = shortest(sources).cloned();
            if before != after {
                if let Some(path) = after {
                    out.push((
                        link.to_owned(),
                        LinkOp::Interest {
                            origin: origin.to_owned(),
                            filter: advertised,
                            path,
                        },
                    ));
                }
            }
        }
    }

    /// Takes `source`'s contribution back.
    fn withdraw(
        &mut self,
        link: &str,
        origin: &str,
        filter: &str,
        source: &Source,
        out: &mut Outgoing,
    ) {
        let Some(table) = self.links.get_mut(link) else {
            return;
        };
        for advertised in narrowed(&table.config.import, filter) {
            let key = (origin.to_owned(), advertised.clone());
            let Some(sources) = table.adverts.get_mut(&key) else {
                continue;
            };
            let before = shortest(sources).cloned();
            if sources.remove(source).is_none() {
                continue;
            }
            match shortest(sources).cloned() {
                None => {
                    table.adverts.remove(&key);
                    out.push((
                        link.to_owned(),
                        LinkOp::InterestGone {
                            origin: origin.to_owned(),
                            filter: advertised,
                        },
                    ));
                }
                Some(path) if Some(&path) != before.as_ref() => out.push((
                    link.to_owned(),
                    LinkOp::Interest {
                        origin: origin.to_owned(),
                        filter: advertised,
                        path,
                    },
                )),
                Some(_) => {}
            }
        }
    }

    /// Recomputes everything `link` is told, from this cluster's own filters
    /// and what the other links learned.
    fn rebuild_adverts(&mut self, link: &str) {
        if let Some(table) = self.links.get_mut(link) {
            table.adverts.clear();
        }
        let mut ignored = Vec::new();
        let me = self.me.clone();
        let own: Vec<String> = self.own.keys().cloned().collect();
        for filter in own {
            self.contribute(
                link,
                &me,
                &filter,
                Source::Own(filter.clone()),
                std::slice::from_ref(&me),
                &mut ignored,
            );
        }
        let max_hops = self
            .links
            .get(link)
            .map_or(0, |t| usize::from(t.config.max_hops));
        let learned: Vec<(String, String, String, Vec<String>)> =
            self.links
                .iter()
                .filter(|(name, _)| name.as_str() != link)
                .flat_map(|(name, table)| {
                    table.learned.iter().map(move |((o, f), e)| {
                        (name.clone(), o.clone(), f.clone(), e.path.clone())
                    })
                })
                .collect();
        for (from, origin, filter, mut path) in learned {
            path.push(me.clone());
            if path.iter().any(|c| c == link) || path.len() >= max_hops {
                continue;
            }
            let source = Source::Learned {
                link: from,
                origin: origin.clone(),
                filter: filter.clone(),
            };
            self.contribute(link, &origin, &filter, source, &path, &mut ignored);
        }
    }

    /// Where a message on `topic` goes. `path` is where it has been (this
    /// cluster last); `to` the destinations it was addressed to when it came
    /// over a link (`None`: published here, so every interested cluster),
    /// and `from` that link. Called for every message published here: it
    /// allocates only for what it returns.
    pub fn route(
        &self,
        topic_name: &str,
        path: &[String],
        to: Option<&[String]>,
        from: Option<&str>,
    ) -> Routes {
        // Per interested origin: its distance and the index of the link
        // chosen for it (links are in name order, so the index breaks ties).
        let mut best: Vec<(Origin, usize, usize)> = Vec::new();
        let mut matched = Vec::new();
        for (index, (name, table)) in self.links.iter().enumerate() {
            if Some(name.as_str()) == from
                || path.contains(name)
                || path.len() > usize::from(table.config.max_hops)
                || !table.exports(topic_name)
            {
                continue;
            }
            table.router.route(topic_name, None, |_| true, &mut matched);
            for (origin, _) in matched.drain(..) {
                let unwanted = path.iter().any(|c| **c == *origin)
                    || to.is_some_and(|to| !to.iter().any(|d| **d == *origin));
                if unwanted {
                    continue;
                }
                let distance = table.distance_to(&origin).unwrap_or(usize::MAX);
                match best.iter_mut().find(|(o, ..)| *o == origin) {
                    Some(entry) if (distance, index) < (entry.1, entry.2) => {
                        entry.1 = distance;
                        entry.2 = index;
                    }
                    Some(_) => {}
                    None => best.push((origin, distance, index)),
                }
            }
        }
        if best.is_empty() {
            return Vec::new();
        }
        best.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
        let mut routes: Routes = Vec::new();
        let names: Vec<&String> = self.links.keys().collect();
        for (origin, _, index) in best {
            match routes.last_mut() {
                Some((link, to)) if link == names[index] => to.push(origin.to_string()),
                _ => routes.push((names[index].clone(), vec![origin.to_string()])),
            }
        }
        routes
    }

    /// Whether messages on `topic` are accepted from `link`'s remote.
    pub fn imports(&self, link: &str, topic_name: &str) -> bool {
        self.links.get(link).is_some_and(|t| {
            t.config
                .import
                .iter()
                .any(|f| topic::matches(f, topic_name))
        })
    }

    /// Everything learned over `link`: (origin, filter, path).
    pub fn learned(&self, link: &str) -> Vec<(String, String, Vec<String>)> {
        self.links.get(link).map_or_else(Vec::new, |table| {
            table
                .learned
                .iter()
                .map(|((origin, filter), entry)| {
                    (origin.clone(), filter.clone(), entry.path.clone())
                })
                .collect()
        })
    }

    /// Advertisements learned over `link`, and sent to it.
    pub fn counts(&self, link: &str) -> (usize, usize) {
        self.links
            .get(link)
            .map_or((0, 0), |t| (t.learned.len(), t.adverts.len()))
    }
}

/// `filter` narrowed to each of `filters` (the topics both match), where
/// they overlap.
fn narrowed(filters: &[String], filter: &str) -> Vec<String> {
    filters
        .iter()
        .filter_map(|f| topic::intersection(filter, f))
        .collect()
}

/// A shared subscription's filter, as plain interest.
fn plain(filter: &str) -> &str {
    match topic::parse_shared(filter) {
        Ok(Some(shared)) => shared.filter,
        _ => filter,
    }
}

/// The shortest path among an advert's contributions (then the first by source).
fn shortest(sources: &BTreeMap<Source, Vec<String>>) -> Option<&Vec<String>> {
    sources.values().min_by_key(|path| path.len())
}

#[cfg(test)]
mod tests;
