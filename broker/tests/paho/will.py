"""Will message: published when the client process is killed, not on a clean
disconnect. The will client runs as a child process (``child`` mode) so that
it really dies without closing the connection gracefully."""

import subprocess
import sys

from common import WAIT, Client, check_eq, fail, main


def child(port, version):
    will = {"topic": "wills/doomed", "payload": "doomed-gone", "qos": 1, "retain": False}
    Client(port, version, "doomed", will=will)
    print("connected", flush=True)
    # Wait to be killed; should the parent die first, its end of the pipe
    # closes and this read returns, so no orphan is left behind.
    sys.stdin.read()


def scenario(port, version, _extra):
    watcher = Client(port, version, "will-watcher")
    check_eq(watcher.subscribe("wills/#", qos=1), [1], "SUBACK")

    polite_will = {"topic": "wills/polite", "payload": "polite-gone", "qos": 1}
    Client(port, version, "polite", will=polite_will).disconnect()

    doomed = subprocess.Popen(
        [sys.executable, sys.argv[0], str(port), str(version), "child"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = doomed.stdout.readline().strip()
        check_eq(line, "connected", "will child's first line")
        doomed.kill()
        doomed.wait(timeout=WAIT)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    msg = watcher.expect(what="the will")
    check_eq((msg.topic, msg.payload), ("wills/doomed", b"doomed-gone"),
             "first message after the kill (the polite will must be discarded)")
    check_eq(msg.qos, 1, "will QoS")
    watcher.disconnect()


if len(sys.argv) == 4 and sys.argv[3] == "child":
    child(int(sys.argv[1]), int(sys.argv[2]))
    fail("unreachable")
main(scenario)
