#!/usr/bin/env python3
"""A Sparkplug B edge node for the end-to-end tests, built on the PyPI
`pysparkplug` library (its MQTT client, topics and protobuf payloads).

    python3 sparkplug_node.py --port 1883 --group plant --node edge1 --state node.json

On connect it sets its will (an NDEATH carrying its bdSeq), publishes an
NBIRTH (seq 0, every metric with its name, alias and data type, plus bdSeq)
and a DBIRTH for its device, then prints "listening". DATA messages carry
aliases only, as Sparkplug recommends, so a host must have read the birth.

The bdSeq and the current values live in the --state file, so a node killed
and started again (the broker publishes its will: NDEATH) comes back with
bdSeq + 1 and its last values, as a real edge node's store would.

Commands, one JSON object per line on stdin; each answered with "done":
    {"cmd": "ndata", "metrics": {"Energy": 123.5}}            node metrics by alias
    {"cmd": "ddata", "metrics": {"Energy": 7.5}}               the device's, by alias
    {"cmd": "gap"}                                             skip a seq number
    {"cmd": "unborn", "node": "edge9", "metrics": {"Energy": 1.0}}  NDATA from a node never born
An NCMD "Node Control/Rebirth" is answered with new births (seq from 0) and
a line "rebirth <node>" on stdout.
"""

import argparse
import json
import os
import sys
import threading

from pysparkplug import (
    Client,
    DataType,
    DBirth,
    DData,
    Message,
    MessageType,
    Metric,
    NBirth,
    NData,
    NDeath,
    QoS,
    Topic,
    get_current_timestamp,
)

DEVICE = "meter-1"
# name -> (alias, type, initial value)
NODE_METRICS = {"Energy": (1, DataType.DOUBLE, 1000.0), "Power": (2, DataType.FLOAT, 10.0)}
DEVICE_METRICS = {"Energy": (10, DataType.DOUBLE, 500.0)}


class Node:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.state = {"bdSeq": -1, "node": {}, "device": {}}
        if os.path.exists(args.state):
            with open(args.state, encoding="utf-8") as f:
                self.state = json.load(f)
        self.state["bdSeq"] = (self.state["bdSeq"] + 1) % 256
        for k, (_, _, v) in NODE_METRICS.items():
            self.state["node"].setdefault(k, v)
        for k, (_, _, v) in DEVICE_METRICS.items():
            self.state["device"].setdefault(k, v)
        self.save()
        self.seq = 0
        self.client = Client(client_id=f"spb-{args.group}-{args.node}")

    def now(self):
        """Milliseconds, never the same twice: a birth and the DATA after it
        are told apart by time, as a real edge node's clock would."""
        t = max(get_current_timestamp(), getattr(self, "last_ts", 0) + 1)
        self.last_ts = t
        return t

    def save(self):
        tmp = self.args.state + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.args.state)

    def next_seq(self):
        s = self.seq
        self.seq = (self.seq + 1) % 256
        return s

    def topic(self, kind, node=None, device=None):
        return Topic(message_type=kind, group_id=self.args.group, edge_node_id=node or self.args.node, device_id=device)

    def bd_seq_metric(self):
        return Metric(timestamp=get_current_timestamp(), name="bdSeq", datatype=DataType.INT64, value=self.state["bdSeq"])

    def publish(self, message, dtypes):
        self.client.publish(message, include_dtypes=dtypes)

    def births(self):
        with self.lock:
            now = self.now()
            self.seq = 0
            metrics = [
                Metric(timestamp=now, name=n, alias=a, datatype=t, value=self.state["node"][n])
                for n, (a, t, _) in NODE_METRICS.items()
            ]
            metrics.append(self.bd_seq_metric())
            self.publish(
                Message(self.topic(MessageType.NBIRTH), NBirth(now, self.next_seq(), tuple(metrics)), QoS.AT_LEAST_ONCE, False),
                True,
            )
            dev = tuple(
                Metric(timestamp=now, name=n, alias=a, datatype=t, value=self.state["device"][n])
                for n, (a, t, _) in DEVICE_METRICS.items()
            )
            self.publish(
                Message(self.topic(MessageType.DBIRTH, device=DEVICE), DBirth(now, self.next_seq(), dev), QoS.AT_LEAST_ONCE, False),
                True,
            )

    def data(self, which, values, node=None):
        with self.lock:
            now = self.now()
            table = NODE_METRICS if which == "node" else DEVICE_METRICS
            metrics = []
            for n, v in values.items():
                alias, t, _ = table[n]
                if node is None:
                    self.state[which][n] = v
                metrics.append(Metric(timestamp=now, name=None, alias=alias, datatype=t, value=v))
            if node is None:
                self.save()
            # A node never born has no seq of its own here: any number will do.
            seq = self.next_seq() if node is None else 7
            if which == "node":
                msg = Message(self.topic(MessageType.NDATA, node=node), NData(now, seq, tuple(metrics)), QoS.AT_LEAST_ONCE, False)
            else:
                msg = Message(self.topic(MessageType.DDATA, device=DEVICE), DData(now, seq, tuple(metrics)), QoS.AT_LEAST_ONCE, False)
            self.publish(msg, False)

    def on_cmd(self, _client, message):
        for m in message.payload.metrics:
            if m.name == "Node Control/Rebirth" and m.value:
                node = message.topic.edge_node_id
                if node == self.args.node:
                    self.births()
                print(f"rebirth {node}", flush=True)

    def run(self):
        death = NDeath(timestamp=get_current_timestamp(), bd_seq_metric=self.bd_seq_metric())
        self.client.set_will(Message(self.topic(MessageType.NDEATH), death, QoS.AT_LEAST_ONCE, False))
        for node in (self.args.node, "edge9"):
            self.client.subscribe(self.topic(MessageType.NCMD, node=node), QoS.AT_LEAST_ONCE, self.on_cmd)
        ready = threading.Event()

        def connected(_client):
            self.births()
            ready.set()

        self.client.connect("127.0.0.1", port=self.args.port, callback=connected)
        if not ready.wait(30):
            print("could not connect", file=sys.stderr, flush=True)
            sys.exit(1)
        print(f"listening {self.args.node} bdSeq {self.state['bdSeq']}", flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "ndata":
                self.data("node", cmd["metrics"])
            elif cmd["cmd"] == "ddata":
                self.data("device", cmd["metrics"])
            elif cmd["cmd"] == "gap":
                with self.lock:
                    self.next_seq()
            elif cmd["cmd"] == "unborn":
                self.data("node", cmd["metrics"], node=cmd["node"])
            print("done", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--state", required=True)
    Node(ap.parse_args()).run()


if __name__ == "__main__":
    main()
