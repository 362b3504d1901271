"""Shared subscription: messages to a group are spread over its members,
each delivered to exactly one of them; a plain subscriber gets them all."""

import queue
import time

from common import WAIT, Client, check, check_eq, fail, main


def scenario(port, version, _extra):
    workers = [Client(port, version, f"worker-{i}") for i in range(2)]
    for worker in workers:
        check_eq(worker.subscribe("$share/pool/jobs/#", qos=1), [1], "SUBACK")
    observer = Client(port, version, "observer")
    observer.subscribe("jobs/#", qos=1)

    pub = Client(port, version, "dispatcher")
    jobs = [f"job{i}".encode() for i in range(10)]
    for job in jobs:
        pub.publish("jobs/build", job, qos=1)

    for job in jobs:
        observer.expect("jobs/build", job)
    got = [[], []]
    deadline = time.monotonic() + WAIT
    while sum(map(len, got)) < len(jobs):
        if time.monotonic() > deadline:
            fail(f"timed out: workers got {got}")
        for i, worker in enumerate(workers):
            try:
                got[i].append(worker.messages.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    check(all(got), f"every worker gets some jobs: {got}")
    check_eq(sorted(got[0] + got[1], key=lambda j: int(j[3:])), jobs, "each job exactly once")
    for client in workers + [observer, pub]:
        client.disconnect()


main(scenario)
