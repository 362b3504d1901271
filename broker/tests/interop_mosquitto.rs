//! Interoperability with the real mosquitto command-line clients (package
//! mosquitto-clients, `make deps`), over MQTT 3.1.1 and 5.0.
//!
//! Each scenario is one function taking the protocol flag; the macro at the
//! bottom turns it into a `v311` and a `v5` test. Features that only exist in
//! MQTT 5 are plain tests. mosquitto_sub 2.0 has no option for the no-local
//! subscription flag, so no-local is covered by the paho tests instead.

mod support;

use std::time::Duration;

use strait_broker::metrics::DropReason;
use support::mosquitto::{args, publish, words, Cli};
use support::start_broker;

const V311: &str = "mqttv311";
const V5: &str = "mqttv5";

/// `-V <version>` followed by the whitespace-separated arguments in `rest`.
fn with_version(version: &str, rest: &str) -> Vec<String> {
    let mut all = args(&["-V", version]);
    all.extend(words(rest));
    all
}

async fn retained_message_is_stored_and_cleared(version: &str) {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    publish(
        addr,
        &with_version(version, "-t status/door -m open -r -q 1"),
        None,
    )
    .await;

    let mut sub = Cli::sub(addr, "%t|%p|%r", &with_version(version, "-t status/# -C 1"));
    assert_eq!(sub.message().await, "status/door|open|1");
    sub.finish().await.assert_success();
    assert_eq!(server.broker().gauges().retained, 1);

    // An empty retained message clears the topic: a new subscriber gets
    // nothing before the live marker message.
    publish(
        addr,
        &with_version(version, "-t status/door -n -r -q 1"),
        None,
    )
    .await;
    let mut sub = Cli::sub(addr, "%t|%p|%r", &with_version(version, "-t status/# -C 1"));
    assert_eq!(sub.subscribed().await, [0]);
    publish(
        addr,
        &with_version(version, "-t status/window -m marker"),
        None,
    )
    .await;
    assert_eq!(sub.message().await, "status/window|marker|0");
    assert_eq!(server.broker().gauges().retained, 0);
    server.shutdown().await;
}

async fn will_is_published_only_when_the_client_dies(version: &str) {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut watcher = Cli::sub(
        addr,
        "%t|%p|%q",
        &with_version(version, "-t wills/# -q 1 -C 1"),
    );
    assert_eq!(watcher.subscribed().await, [1]);

    // `-E` disconnects cleanly after SUBACK: this will must be discarded.
    let polite = Cli::sub(
        addr,
        "%p",
        &with_version(
            version,
            "-t x -E --will-topic wills/polite --will-payload polite-gone",
        ),
    );
    polite.finish().await.assert_success();

    let mut doomed = Cli::sub(
        addr,
        "%p",
        &with_version(
            version,
            "-t x --will-topic wills/doomed --will-payload doomed-gone --will-qos 1",
        ),
    );
    doomed.subscribed().await;
    doomed.kill().await;
    assert_eq!(watcher.message().await, "wills/doomed|doomed-gone|1");
    watcher.finish().await.assert_success();
    server.shutdown().await;
}

async fn qos2_messages_arrive_exactly_once_in_order(version: &str) {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = Cli::sub(
        addr,
        "%t|%p|%q",
        &with_version(version, "-t exact/t -q 2 -C 3"),
    );
    assert_eq!(sub.subscribed().await, [2]);

    let out = publish(
        addr,
        &with_version(version, "-t exact/t -q 2 -l"),
        Some("one\ntwo\nthree\n"),
    )
    .await;
    assert_eq!(out.matches("received PUBREC").count(), 3, "{out}");
    assert_eq!(out.matches("received PUBCOMP").count(), 3, "{out}");

    let ended = sub.finish().await;
    ended.assert_success();
    assert_eq!(
        ended.messages,
        ["exact/t|one|2", "exact/t|two|2", "exact/t|three|2"]
    );
    let releases = ended
        .output
        .iter()
        .filter(|l| l.contains("received PUBREL"))
        .count();
    assert_eq!(
        releases,
        3,
        "subscriber side of the QoS 2 flow:\n{}",
        ended.output.join("\n")
    );
    server.shutdown().await;
}

async fn persistent_session_receives_what_was_queued_while_offline(version: &str) {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let session = |extra: &str| {
        let mut all = with_version(version, "-c -i resumer -q 1 -t queue/#");
        if version == V5 {
            all.extend(words("-x 300"));
        }
        all.extend(words(extra));
        all
    };
    Cli::sub(addr, "%t|%p|%q", &session("-E"))
        .finish()
        .await
        .assert_success();

    publish(
        addr,
        &with_version(version, "-t queue/a -q 1 -l"),
        Some("m1\nm2\nm3\n"),
    )
    .await;
    // A QoS 0 message for an offline session is not queued.
    publish(addr, &with_version(version, "-t queue/a -m m4-qos0"), None).await;
    publish(addr, &with_version(version, "-t queue/a -q 1 -m m5"), None).await;

    let ended = Cli::sub(addr, "%t|%p|%q", &session("-C 4")).finish().await;
    ended.assert_success();
    assert_eq!(
        ended.messages,
        [
            "queue/a|m1|1",
            "queue/a|m2|1",
            "queue/a|m3|1",
            "queue/a|m5|1"
        ]
    );
    server.shutdown().await;
}

async fn shared_subscription_spreads_messages_over_the_group(version: &str) {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let worker = |id: &str| {
        Cli::sub(
            addr,
            "%p",
            &with_version(version, &format!("-i {id} -q 1 -t $share/workers/jobs/#")),
        )
    };
    let mut a = worker("worker-a");
    let mut b = worker("worker-b");
    assert_eq!(a.subscribed().await, [1]);
    assert_eq!(b.subscribed().await, [1]);

    let jobs: Vec<String> = (0..10).map(|i| format!("job{i}")).collect();
    let input = jobs.iter().map(|j| format!("{j}\n")).collect::<String>();
    publish(
        addr,
        &with_version(version, "-t jobs/build -q 1 -l"),
        Some(&input),
    )
    .await;

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < jobs.len() {
        tokio::select! {
            m = a.message() => got_a.push(m),
            m = b.message() => got_b.push(m),
        }
    }
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "a got {got_a:?}, b got {got_b:?}"
    );
    let mut all: Vec<String> = got_a.into_iter().chain(got_b).collect();
    all.sort_by_key(|j| j[3..].parse::<u32>().expect("job number"));
    assert_eq!(all, jobs, "each job exactly once");
    server.shutdown().await;
}

macro_rules! for_both_versions {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn v311() {
                    super::$scenario(super::V311).await;
                }

                #[tokio::test]
                async fn v5() {
                    super::$scenario(super::V5).await;
                }
            }
        )*
    };
}

for_both_versions!(
    retained_message_is_stored_and_cleared,
    will_is_published_only_when_the_client_dies,
    qos2_messages_arrive_exactly_once_in_order,
    persistent_session_receives_what_was_queued_while_offline,
    shared_subscription_spreads_messages_over_the_group,
);

#[tokio::test]
async fn v5_session_expiry_interval_ends_the_session() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let session = |extra: &str| {
        let mut all = with_version(V5, "-c -x 1 -i short-lived -q 1 -t expiring/#");
        all.extend(words(extra));
        all
    };
    Cli::sub(addr, "%t|%p", &session("-E"))
        .finish()
        .await
        .assert_success();
    // The session expiry interval itself must pass.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Had the session survived, this would be queued and delivered first.
    publish(addr, &with_version(V5, "-t expiring/a -q 1 -m lost"), None).await;

    let mut back = Cli::sub(addr, "%t|%p", &session("-C 1"));
    assert_eq!(back.subscribed().await, [1]);
    publish(
        addr,
        &with_version(V5, "-t expiring/a -q 1 -m marker"),
        None,
    )
    .await;
    assert_eq!(back.message().await, "expiring/a|marker");
    back.finish().await.assert_success();
    server.shutdown().await;
}

#[tokio::test]
async fn v5_topic_alias_from_the_publisher_is_resolved() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = Cli::sub(addr, "%t|%p", &with_version(V5, "-t alias/# -C 3"));
    sub.subscribed().await;

    let out = publish(
        addr,
        &with_version(
            V5,
            "-t alias/long/topic/name -q 1 -l -D publish topic-alias 1",
        ),
        Some("a1\na2\na3\n"),
    )
    .await;
    // The second and third PUBLISH carried only the alias, no topic name.
    assert_eq!(out.matches("'(null)'").count(), 2, "{out}");
    assert_eq!(out.matches("received PUBACK").count(), 3, "{out}");

    let ended = sub.finish().await;
    ended.assert_success();
    assert_eq!(
        ended.messages,
        [
            "alias/long/topic/name|a1",
            "alias/long/topic/name|a2",
            "alias/long/topic/name|a3"
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn v5_message_expiry_drops_stale_retained_and_queued_messages() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let session = |extra: &str| {
        let mut all = with_version(V5, "-c -x 300 -i sleeper -q 1 -t news/#");
        all.extend(words(extra));
        all
    };
    Cli::sub(addr, "%t|%p|%E", &session("-E"))
        .finish()
        .await
        .assert_success();

    let expiring = |topic: &str, payload: &str, secs: &str, retain: bool| {
        let mut all = with_version(
            V5,
            &format!("-t {topic} -m {payload} -q 1 -D publish message-expiry-interval {secs}"),
        );
        if retain {
            all.push("-r".into());
        }
        all
    };
    publish(addr, &expiring("retained/short", "stale", "1", true), None).await;
    publish(addr, &expiring("retained/long", "fresh", "100", true), None).await;
    publish(addr, &expiring("news/short", "stale", "1", false), None).await;
    publish(addr, &expiring("news/long", "fresh", "100", false), None).await;
    // The expiry interval itself must pass; nothing else is waited for by time.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Queued for the offline session: only the unexpired message is delivered.
    let mut resumed = Cli::sub(addr, "%t|%p|%E", &session("-C 1"));
    let message = resumed.message().await;
    let (head, remaining) = message.rsplit_once('|').expect("expiry field");
    assert_eq!(head, "news/long|fresh");
    let remaining: u32 = remaining.parse().expect("remaining expiry is a number");
    assert!(
        (95..100).contains(&remaining),
        "remaining expiry {remaining} should have been lowered"
    );
    resumed.finish().await.assert_success();

    // Retained: the expired one is gone, the other is sent before the marker.
    let mut sub = Cli::sub(addr, "%t|%p|%r", &with_version(V5, "-t retained/# -C 2"));
    sub.subscribed().await;
    publish(addr, &with_version(V5, "-t retained/marker -m end"), None).await;
    let ended = sub.finish().await;
    ended.assert_success();
    assert_eq!(
        ended.messages,
        ["retained/long|fresh|1", "retained/marker|end|0"]
    );
    assert!(server.broker().metrics().drops_total(DropReason::Expired) >= 1);
    server.shutdown().await;
}

#[tokio::test]
async fn v5_user_properties_pass_through_in_order() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = Cli::sub(addr, "%t|%P|%p", &with_version(V5, "-t props/# -C 1"));
    sub.subscribed().await;
    publish(
        addr,
        &with_version(
            V5,
            "-t props/t -m body -q 1 \
             -D publish user-property region eu \
             -D publish user-property region us \
             -D publish user-property trace 7f3a",
        ),
        None,
    )
    .await;
    assert_eq!(
        sub.message().await,
        "props/t|region:eu region:us trace:7f3a|body"
    );
    sub.finish().await.assert_success();
    server.shutdown().await;
}

#[tokio::test]
async fn v5_request_response_properties_and_subscription_identifier() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = Cli::sub(
        addr,
        "%R|%D|%C|%F|%S|%p",
        &with_version(V5, "-t rpc/# -C 1 -D subscribe subscription-identifier 42"),
    );
    sub.subscribed().await;
    publish(
        addr,
        &with_version(
            V5,
            "-t rpc/get -m {} -q 1 \
             -D publish response-topic rpc/reply/9 \
             -D publish correlation-data req-9 \
             -D publish content-type application/json \
             -D publish payload-format-indicator 1",
        ),
        None,
    )
    .await;
    assert_eq!(
        sub.message().await,
        "rpc/reply/9|req-9|application/json|1|42|{}"
    );
    sub.finish().await.assert_success();
    server.shutdown().await;
}
